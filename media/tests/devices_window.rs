//! The `window` video sink: with a display (try `xvfb-run cargo test --test devices_window`)
//! it opens and shows the pattern; without one it is a clear error.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use magpie_media::devices::{Error, PatternGenerator, VideoSink, VideoSinkSpec};
use magpie_media::probe::WallTime;

#[test]
fn window_sink_shows_frames_or_says_there_is_no_display() {
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    let sink = VideoSink::open(&VideoSinkSpec::Window, Some(30));
    if !has_display {
        let err = sink.unwrap_err();
        assert!(matches!(err, Error::NoDisplay));
        assert!(err.to_string().contains("DISPLAY"));
        return;
    }
    let mut sink = sink.unwrap();
    let mut pattern = PatternGenerator::new(640, 480).unwrap();
    // A stale DISPLAY (an X forwarding that is gone) is the display server's refusal, not ours.
    if let Err(e) = sink.show(&pattern.next_frame(WallTime::now())) {
        assert!(matches!(e, Error::Window(_)), "{e}");
        eprintln!("display set but unusable: {e}");
        return;
    }
    let mut last = WallTime::from_micros(0);
    // Two seconds of video at 30 fps, paced so a person (or a screenshot) can see it.
    for _ in 0..60 {
        let frame = pattern.next_frame(WallTime::now());
        let shown = sink.show(&frame).unwrap();
        assert!(shown >= last);
        last = shown;
        std::thread::sleep(Duration::from_millis(33));
    }
}
