//! Call quality as one figure: the ITU-T G.107 E-model.
//!
//! The E-model turns transmission impairments into a rating factor R (0 to 100) and a
//! mean opinion score (MOS, 1 to 4.5). Magpie feeds it what it measured on decoded
//! media: the mouth-to-ear delay and the share of audio frames that did not play as
//! sent (concealed after every recovery). The same function serves the client's call
//! summary, the loss/latency lab and the tests, so their figures agree.
//!
//! All parameters other than delay, loss and burstiness are the G.107 defaults
//! (Table 2: no room noise, TELR 65 dB, WEPL 110 dB, no advantage factor), which give
//! R = 93.2 for a perfect narrowband connection.
//!
//! Opus has no entry in ITU-T G.113, so [`Codec::default`] uses the values G.113
//! Appendix I gives for G.711 with packet loss concealment (Ie = 0, Bpl = 25.1). That
//! is conservative for Opus, whose concealment is better, and it keeps our figures
//! comparable with published ones.

/// The equipment impairment values of the codec (ITU-T G.113 Appendix I).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Codec {
    /// Equipment impairment factor Ie: the codec's distortion with no loss.
    pub ie: f64,
    /// Packet-loss robustness factor Bpl: the higher, the better it conceals loss.
    pub bpl: f64,
}

impl Default for Codec {
    fn default() -> Self {
        // G.711 with PLC, G.113 Appendix I: the stand-in for Opus (see module docs).
        Self { ie: 0.0, bpl: 25.1 }
    }
}

/// What the E-model is given about one direction of a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairments {
    /// Mouth-to-ear delay Ta in milliseconds (p50 of the measured latency is the usual pick).
    pub delay_ms: f64,
    /// Share of frames lost after all recovery, in percent (Ppl).
    pub loss_percent: f64,
    /// Burst ratio BurstR: 1 for random loss, above 1 for bursty loss.
    pub burst_ratio: f64,
    /// The codec's impairment values.
    pub codec: Codec,
}

/// The E-model's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// Transmission rating factor R, 0 to 100.
    pub r: f64,
    /// Mean opinion score, 1 to 4.5, from R (G.107 Annex B).
    pub mos: f64,
}

/// Basic signal-to-noise ratio Ro minus the simultaneous impairment Is with the default
/// parameters of G.107 Table 2 (Ro = 94.77, Is = 1.41).
const RO: f64 = 94.768;
const IS: f64 = 1.4136;
/// Talker echo loudness rating, dB (G.107 default).
const TELR: f64 = 65.0;
/// Weighted echo path loss, dB (G.107 default).
const WEPL: f64 = 110.0;
/// Total noise power at the receive side No, dBm0p, that the defaults give.
const NO: f64 = -61.18;

impl Impairments {
    /// Random loss of `loss_percent` at `delay_ms`, with the default codec values.
    pub fn new(delay_ms: f64, loss_percent: f64) -> Self {
        Self {
            delay_ms,
            loss_percent,
            burst_ratio: 1.0,
            codec: Codec::default(),
        }
    }

    /// Rates the connection.
    pub fn rate(&self) -> Rating {
        let r = (RO - IS - delay_impairment(self.delay_ms) - self.effective_equipment())
            .clamp(0.0, 100.0);
        Rating { r, mos: mos(r) }
    }

    /// Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl) (G.107 equation 7-29).
    fn effective_equipment(&self) -> f64 {
        let Codec { ie, bpl } = self.codec;
        let ppl = self.loss_percent.clamp(0.0, 100.0);
        let burst_ratio = self.burst_ratio.max(1.0);
        ie + (95.0 - ie) * ppl / (ppl / burst_ratio + bpl)
    }
}

/// Id = Idte + Idle + Idd for a one-way delay of `ta` ms, with the mean one-way echo
/// delay T equal to Ta and the round trip Tr twice it (G.107 clause 7.4).
fn delay_impairment(ta: f64) -> f64 {
    let ta = ta.max(0.0);
    let t = ta;
    let tr = 2.0 * ta;

    // Talker echo (7-19 to 7-22).
    let roe = -1.5 * (NO + 2.0);
    let terv =
        TELR - 40.0 * ((1.0 + t / 10.0) / (1.0 + t / 150.0)).log10() + 6.0 * (-0.3 * t * t).exp();
    let re = 80.0 + 2.5 * (terv - 14.0);
    let idte =
        ((roe - re) / 2.0 + ((roe - re).powi(2) / 4.0 + 100.0).sqrt() - 1.0) * (1.0 - (-t).exp());

    // Listener echo (7-23, 7-24).
    let rle = 10.5 * (WEPL + 7.0) * (tr + 1.0).powf(-0.25);
    let idle = (RO - rle) / 2.0 + ((RO - rle).powi(2) / 4.0 + 169.0).sqrt();

    // Too-long absolute delay (7-25, 7-26): nothing up to 100 ms.
    let idd = if ta <= 100.0 {
        0.0
    } else {
        let x = (ta / 100.0).log2();
        25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
            + 2.0)
    };
    idte + idle + idd
}

/// MOS from R (G.107 Annex B, equation B-4).
fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_connection_rates_at_the_g107_default() {
        let rating = Impairments::new(0.0, 0.0).rate();
        assert!((rating.r - 93.2).abs() < 0.1, "R = {}", rating.r);
        assert!((rating.mos - 4.41).abs() < 0.01, "MOS = {}", rating.mos);
    }

    #[test]
    fn too_long_delay_term_matches_the_closed_form_at_200_ms() {
        // At Ta = 200 ms, X = 1 and Idd = 25 * (2^(1/6) - 3 * (1 + 3^-6)^(1/6) + 2).
        let expected =
            25.0 * (2f64.powf(1.0 / 6.0) - 3.0 * (1.0 + 3f64.powi(-6)).powf(1.0 / 6.0) + 2.0);
        let with_idd = delay_impairment(200.0);
        let just_below = delay_impairment(100.0);
        assert!((expected - 3.04).abs() < 0.01);
        assert!(
            with_idd - just_below > expected,
            "Idd must add on top of echo terms"
        );
    }

    #[test]
    fn rating_falls_as_delay_and_loss_grow() {
        let mut last = f64::INFINITY;
        for delay in [0.0, 50.0, 150.0, 300.0, 600.0] {
            let r = Impairments::new(delay, 0.0).rate().r;
            assert!(r < last, "R must fall with delay: {r} at {delay} ms");
            last = r;
        }
        let mut last = f64::INFINITY;
        for loss in [0.0, 0.5, 2.0, 10.0, 40.0] {
            let r = Impairments::new(100.0, loss).rate().r;
            assert!(r < last, "R must fall with loss: {r} at {loss} %");
            last = r;
        }
    }

    #[test]
    fn bursty_loss_hurts_more_than_random_loss() {
        let random = Impairments::new(100.0, 5.0);
        let bursty = Impairments {
            burst_ratio: 2.0,
            ..random
        };
        assert!(bursty.rate().r < random.rate().r);
    }

    #[test]
    fn effective_equipment_impairment_follows_g107() {
        // Ppl = 5 % random with Ie = 0, Bpl = 25.1: 95 * 5 / 30.1.
        let ie_eff = Impairments::new(0.0, 5.0).effective_equipment();
        assert!((ie_eff - 95.0 * 5.0 / 30.1).abs() < 1e-9);
    }

    #[test]
    fn pathological_inputs_stay_in_range() {
        for (delay, loss) in [(-5.0, -1.0), (1e9, 1e9), (f64::MAX, 100.0)] {
            let rating = Impairments::new(delay, loss).rate();
            assert!((0.0..=100.0).contains(&rating.r), "R = {}", rating.r);
            assert!((1.0..=4.5).contains(&rating.mos), "MOS = {}", rating.mos);
        }
    }
}
