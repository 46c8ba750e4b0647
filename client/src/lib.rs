//! The `magpie` client: places and answers calls, wiring a signaling connection,
//! one UDP socket, the media session, the codecs and the devices together.

pub mod candidates;
pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod engine;
pub mod files;
pub mod interop;
pub mod lan;
pub mod mailbox;
pub mod offer;
pub mod preflight;
pub mod status;
pub mod summary;
pub mod transfer;

use magpie_media::devices::DeviceList;

/// The device list as `magpie devices` prints it; plain about what is missing.
pub fn devices_text(list: &DeviceList) -> String {
    let mut out = String::new();
    let mut section = |title: &str, entries: Vec<String>, use_as: &str| {
        out.push_str(&format!("{title}:\n"));
        if entries.is_empty() {
            out.push_str("  none found\n");
        }
        for entry in entries {
            out.push_str(&format!("  {entry}  (use as {use_as})\n"));
        }
    };
    let named = |v: &[(String, String)], kind: &str| {
        v.iter()
            .map(|(id, name)| format!("{name} [{kind}:{id}]"))
            .collect::<Vec<_>>()
    };
    section(
        "microphones",
        named(&list.audio_inputs, "mic"),
        "--audio-in",
    );
    section(
        "speakers",
        named(&list.audio_outputs, "speaker"),
        "--audio-out",
    );
    let cameras = list
        .cameras
        .iter()
        .map(|c| format!("{} [camera:{}]", c.name, c.index))
        .collect();
    section("cameras", cameras, "--video-in camera:INDEX");
    for problem in &list.problems {
        out.push_str(&format!("note: {problem}\n"));
    }
    out.push_str(
        "synthetic and file media work everywhere: --audio-in tone|wav:PATH, \
                  --video-in pattern|y4m:PATH\n",
    );
    out
}
