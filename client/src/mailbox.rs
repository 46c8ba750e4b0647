//! Files left on the server for someone who is offline: `magpie send` leaves them when
//! the receiver is not logged in, and the receiver's `magpie receive` takes them at its
//! next login (see `file-put` in the signaling PROTOCOL.md). The server keeps each file
//! up to its size limit and time to live; the receiver sees the same line as for a live
//! offer (name, size, image dimensions), accepts or declines, and the bytes land in the
//! same receiving folder, resumable and SHA-256 checked, never overwriting anything.

use std::path::PathBuf;

use magpie_signaling::client::Client;
use magpie_signaling::proto::FileOffer;
use tokio::io::BufReader;

use crate::cli::ReceiveArgs;
use crate::commands::{Error, format_time};
use crate::transfer::describe_file;
use crate::transfer::progress::Progress;
use crate::transfer::proto::{FileInfo, human_size};
use crate::transfer::store::Inbox;

/// Leaves each of `paths` on the server for `to`, one after another.
pub async fn leave(client: &Client, to: &str, paths: &[PathBuf], quiet: bool) -> Result<(), Error> {
    let files = paths
        .iter()
        .map(|p| describe_file(p))
        .collect::<Result<Vec<FileInfo>, _>>()?;
    let progress = Progress::for_stderr(quiet);
    for (path, info) in paths.iter().zip(files) {
        let read = |source| {
            Error::Transfer(crate::transfer::Error::Read {
                path: path.clone(),
                source,
            })
        };
        let file = tokio::fs::File::open(path).await.map_err(read)?;
        progress.start_file(info.name.as_str(), info.size, 0);
        let mut done = 0;
        let described = info.describe();
        let stored = client
            .leave_file(to, info.into(), BufReader::new(file), |received| {
                progress.advance(received - done);
                done = received;
            })
            .await
            .map_err(|e| crate::commands::refusal(e, to))?;
        progress.finish_file();
        println!(
            "left {described} on the server for {to}: {} when they log in (kept until {})",
            if stored.delivered {
                "they are online now, and were told at once;"
            } else {
                "they get it"
            },
            format_time(stored.expires_at)
        );
    }
    Ok(())
}

/// Shows a file left for this user and, if it fits and the person (or `--yes`) takes
/// it, receives it into the folder, checks its SHA-256 and tells the server, which
/// deletes it. A declined file is deleted too. Returns where it went.
pub async fn take(
    client: &Client,
    offer: FileOffer,
    args: &ReceiveArgs,
    quiet: bool,
    ask: impl Future<Output = bool>,
) -> Result<Option<PathBuf>, Error> {
    let from = offer.from.clone();
    let info = FileInfo::from(offer.file.clone());
    let inbox = Inbox::open(&args.dir)?;
    eprintln!(
        "{from} left a file on the server for you on {} (kept until {}):",
        format_time(offer.sent_at),
        format_time(offer.expires_at)
    );
    let declined = if info.size > args.max_size {
        Some(format!("over --max-size {}", human_size(args.max_size)))
    } else if inbox.free_name(&info.name).is_none() {
        Some("no free name".to_owned())
    } else {
        None
    };
    match (&declined, inbox.free_name(&info.name)) {
        (Some(why), _) => eprintln!("  {} — declined: {why}", info.describe()),
        (None, Some(name)) if name != info.name.as_str() => {
            eprintln!("  {} (saved as {name})", info.describe());
        }
        (None, _) => eprintln!("  {}", info.describe()),
    }
    if declined.is_some() || !(args.yes || ask.await) {
        client
            .file_done(offer.file_id, false)
            .await
            .map_err(Error::Server)?;
        eprintln!("declined {} from {from}; the server deleted it", info.name);
        return Ok(None);
    }
    let mut incoming = inbox.prepare(&info)?;
    let progress = Progress::for_stderr(quiet);
    progress.start_file(info.name.as_str(), info.size, incoming.offset());
    let mut failed = None;
    let taken = client
        .take_file(&offer, incoming.offset(), |bytes| {
            if let Err(e) = incoming.write(bytes) {
                let io = std::io::Error::other(e.to_string());
                failed = Some(e);
                return Err(io);
            }
            progress.advance(bytes.len() as u64);
            Ok(())
        })
        .await;
    if let Err(e) = taken {
        // What arrived stays in the .part file; the next login resumes it.
        return Err(failed.map_or(Error::Server(e), Error::Store));
    }
    progress.finish_file();
    let path = incoming.finish(&inbox)?;
    client
        .file_done(offer.file_id, true)
        .await
        .map_err(Error::Server)?;
    crate::files::show_stored(from.as_str(), vec![path.clone()]);
    Ok(Some(path))
}
