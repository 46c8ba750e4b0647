//! The hub: one task that owns who is online, who watches whom, and the call state
//! machine. Connection tasks send it [`Command`]s; it answers on oneshots and pushes
//! events into each session's bounded queue with `try_send`, so it never waits on a
//! slow client. A session whose queue is full is dropped (its connection closes).
//!
//! A user may hold several sessions at once (`magpie answer` on two devices, and a
//! `magpie chat` beside them): chat and presence go to every session; a call rings on
//! every session of the callee, the first to accept takes it and the others are told
//! (`answered-elsewhere`); from then on the call's events go only to the two sessions
//! that placed and took it, and only losing one of those ends it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::calls::{CallError, CallEvent, Calls, EndedCall};
use crate::db::Db;
use crate::metrics::METRICS;
use crate::pii::Pii;
use crate::proto::{CallId, CallRecord, EndReason, Event, Presence, Trickle, UserName};
use crate::relay::CallPeers;
use crate::store;

/// Identifies one TCP connection, so a stale logout cannot end a newer session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId(pub(crate) u64);

/// What the hub pushes to a connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Write this event.
    Event(Event),
    /// The user opened more than [`MAX_SESSIONS`] sessions and this is the oldest: say
    /// so and close.
    Replaced,
}

/// A call request, on behalf of the logged-in user.
#[derive(Debug)]
pub(crate) enum CallAction {
    Invite { to: UserName, offer: Value },
    Accept { id: CallId, answer: Value },
    Reject(CallId),
    Cancel(CallId),
    Hangup(CallId),
}

/// Why the hub refused a call request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HubError {
    #[error("not online")]
    Offline,
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("server is stopping")]
    Stopped,
}

/// A request to the hub.
#[derive(Debug)]
pub(crate) enum Command {
    Login {
        user: UserName,
        conn: ConnId,
        /// Where the connection comes from, for the relay's permissions.
        ip: Option<IpAddr>,
        tx: mpsc::Sender<Outbound>,
        done: oneshot::Sender<()>,
    },
    Logout {
        user: UserName,
        conn: ConnId,
    },
    Who {
        reply: oneshot::Sender<Vec<UserName>>,
    },
    /// Adds to `user`'s watch list; `None` if it would exceed `max` users in all.
    Watch {
        user: UserName,
        users: Vec<UserName>,
        max: usize,
        reply: oneshot::Sender<Option<Vec<Presence>>>,
    },
    Call {
        user: UserName,
        conn: ConnId,
        action: CallAction,
        reply: oneshot::Sender<Result<Option<CallId>, HubError>>,
    },
    /// Whether `user` is a party of the live call `call_id`.
    InCall {
        user: UserName,
        call_id: CallId,
        reply: oneshot::Sender<bool>,
    },
    /// Passes late candidates to the other party; `false` if `user` is not a party of
    /// the live call.
    Trickle {
        user: UserName,
        trickle: Trickle,
        reply: oneshot::Sender<bool>,
    },
    /// An event for every session of `to` (a chat message, a stored file); `reply` says
    /// whether `to` was online.
    Deliver {
        to: UserName,
        event: Event,
        reply: oneshot::Sender<bool>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Maps the monotonic clock to Unix milliseconds for the records people read.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    base: Instant,
    base_unix_ms: u64,
}

impl WallClock {
    fn new(now: Instant) -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self {
            base: now,
            base_unix_ms: millis(since_epoch),
        }
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        self.base_unix_ms + millis(at.saturating_duration_since(self.base))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How many sessions one user may hold: several devices and a few short commands beside
/// them. Past it the oldest is closed, so a leaked session cannot lock a user out.
pub(crate) const MAX_SESSIONS: usize = 8;

struct Session {
    conn: ConnId,
    tx: mpsc::Sender<Outbound>,
}

/// The sessions a call belongs to: the caller's that invited, and the callee's that
/// accepted (until then it rings on all the callee's sessions).
#[derive(Debug, Clone, Copy)]
struct Bound {
    caller: ConnId,
    callee: Option<ConnId>,
    invited: Instant,
}

pub(crate) struct Hub {
    sessions: HashMap<UserName, Vec<Session>>,
    bound: HashMap<CallId, Bound>,
    /// The session whose request is being handled, so it is not told what it did.
    acting: Option<ConnId>,
    /// watched user -> their watchers
    watchers: HashMap<UserName, HashSet<UserName>>,
    /// watcher -> the users they watch, to undo on logout
    watching: HashMap<UserName, HashSet<UserName>>,
    calls: Calls,
    db: Db,
    clock: WallClock,
    /// Sessions whose queue overflowed, to log out after the current step.
    stuck: Vec<(UserName, ConnId)>,
    /// Who is in a call with whom, and from where, for the relay.
    call_peers: CallPeers,
}

impl Hub {
    pub(crate) fn new(db: Db, ring_timeout: Duration, first_call_id: u64) -> Self {
        Self {
            sessions: HashMap::new(),
            bound: HashMap::new(),
            acting: None,
            watchers: HashMap::new(),
            watching: HashMap::new(),
            calls: Calls::new(ring_timeout, first_call_id),
            db,
            clock: WallClock::new(Instant::now()),
            stuck: Vec::new(),
            call_peers: CallPeers::new(),
        }
    }

    /// Keeps `peers` up to date with logins and calls (the relay reads it).
    pub(crate) fn set_call_peers(mut self, peers: CallPeers) -> Self {
        self.call_peers = peers;
        self
    }

    /// Runs until every command sender is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let deadline = self.calls.poll_timeout();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle(Instant::now(), command),
                    None => break,
                },
                () = sleep_until_some(deadline) => self.calls.handle_timeout(Instant::now()),
            }
            self.settle(Instant::now());
        }
        debug!("hub stopped");
    }

    fn handle(&mut self, now: Instant, command: Command) {
        match command {
            Command::Login {
                user,
                conn,
                ip,
                tx,
                done,
            } => {
                if let Some(ip) = ip {
                    self.call_peers.online(user.as_str(), ip);
                }
                self.login(now, user, conn, tx);
                let _ = done.send(());
            }
            Command::Logout { user, conn } => self.logout(now, &user, conn),
            Command::Who { reply } => {
                let mut users: Vec<UserName> = self.sessions.keys().cloned().collect();
                users.sort();
                let _ = reply.send(users);
            }
            Command::Watch {
                user,
                users,
                max,
                reply,
            } => {
                let _ = reply.send(self.watch(&user, users, max));
            }
            Command::Call {
                user,
                conn,
                action,
                reply,
            } => {
                self.acting = Some(conn);
                let _ = reply.send(self.call(now, &user, conn, action));
            }
            Command::InCall {
                user,
                call_id,
                reply,
            } => {
                let _ = reply.send(self.calls.peer_of(&user, call_id).is_some());
            }
            Command::Trickle {
                user,
                trickle,
                reply,
            } => {
                let Some(peer) = self.calls.peer_of(&user, trickle.call_id).cloned() else {
                    let _ = reply.send(false);
                    return;
                };
                // A peer whose queue is full is dropped by `send`; the sender's request
                // still succeeded as far as it can tell, as with any event.
                self.send(&peer, Event::Candidates(trickle));
                let _ = reply.send(true);
            }
            Command::Deliver { to, event, reply } => {
                let _ = reply.send(self.send(&to, event));
            }
            Command::Shutdown { done } => {
                info!(calls = self.calls.len(), "ending calls for shutdown");
                self.calls.end_all(now, EndReason::ServerShutdown);
                self.settle(now);
                let _ = done.send(());
            }
        }
    }

    fn login(&mut self, now: Instant, user: UserName, conn: ConnId, tx: mpsc::Sender<Outbound>) {
        let sessions = self.sessions.entry(user.clone()).or_default();
        sessions.push(Session { conn, tx });
        match sessions.len() {
            1 => {
                debug!(user = %Pii(&user), "online");
                self.tell_watchers(&user, true);
            }
            n if n > MAX_SESSIONS => {
                let oldest = sessions.remove(0);
                info!(user = %Pii(&user), "oldest session closed: too many sessions");
                let _ = oldest.tx.try_send(Outbound::Replaced);
                self.end_calls_of(now, &user, oldest.conn, false);
            }
            n => debug!(user = %Pii(&user), sessions = n, "another session"),
        }
    }

    fn logout(&mut self, now: Instant, user: &UserName, conn: ConnId) {
        let Some(sessions) = self.sessions.get_mut(user) else {
            return;
        };
        let Some(i) = sessions.iter().position(|s| s.conn == conn) else {
            return;
        };
        sessions.remove(i);
        let last = sessions.is_empty();
        if last {
            self.sessions.remove(user);
            self.call_peers.offline(user.as_str());
            debug!(user = %Pii(&user), "offline");
        }
        self.end_calls_of(now, user, conn, last);
        if last {
            self.unwatch_all(user);
            self.tell_watchers(user, false);
        }
    }

    /// Ends `user`'s call if it belongs to the session `conn` that is gone, or if it
    /// rings and `user` has no session `last` left to answer it.
    fn end_calls_of(&mut self, now: Instant, user: &UserName, conn: ConnId, last: bool) {
        let Some(id) = self.calls.call_of(user) else {
            return;
        };
        let owned = self
            .bound
            .get(&id)
            .is_some_and(|b| b.caller == conn || b.callee == Some(conn));
        if owned || last {
            self.calls.drop_user(now, user, EndReason::PeerLost);
        }
    }

    fn watch(
        &mut self,
        user: &UserName,
        users: Vec<UserName>,
        max: usize,
    ) -> Option<Vec<Presence>> {
        let watched = self.watching.get(user);
        let added = users
            .iter()
            .filter(|u| !watched.is_some_and(|w| w.contains(*u)))
            .count();
        if watched.map_or(0, HashSet::len) + added > max {
            return None;
        }
        let mut state = Vec::with_capacity(users.len());
        for watched in users {
            self.watchers
                .entry(watched.clone())
                .or_default()
                .insert(user.clone());
            self.watching
                .entry(user.clone())
                .or_default()
                .insert(watched.clone());
            let online = self.sessions.contains_key(&watched);
            state.push(Presence {
                user: watched,
                online,
            });
        }
        Some(state)
    }

    fn unwatch_all(&mut self, user: &UserName) {
        for watched in self.watching.remove(user).unwrap_or_default() {
            if let Some(watchers) = self.watchers.get_mut(&watched) {
                watchers.remove(user);
                if watchers.is_empty() {
                    self.watchers.remove(&watched);
                }
            }
        }
    }

    fn tell_watchers(&mut self, user: &UserName, online: bool) {
        let watchers: BTreeSet<UserName> = self
            .watchers
            .get(user)
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default();
        for watcher in watchers {
            self.send(
                &watcher,
                Event::Presence(Presence {
                    user: user.clone(),
                    online,
                }),
            );
        }
    }

    fn call(
        &mut self,
        now: Instant,
        user: &UserName,
        conn: ConnId,
        action: CallAction,
    ) -> Result<Option<CallId>, HubError> {
        match action {
            CallAction::Invite { to, offer } => {
                if !self.sessions.contains_key(&to) {
                    return Err(HubError::Offline);
                }
                let id = match self.calls.handle_invite(now, user, &to) {
                    Ok(id) => id,
                    Err(CallError::Busy(callee)) => {
                        self.record_busy(now, user, &callee);
                        return Err(CallError::Busy(callee).into());
                    }
                    Err(err) => return Err(err.into()),
                };
                self.bound.insert(
                    id,
                    Bound {
                        caller: conn,
                        callee: None,
                        invited: now,
                    },
                );
                METRICS.inc_invited();
                info!(call = %id, caller = %Pii(user), callee = %Pii(&to), "call invited");
                self.send(
                    &to,
                    Event::IncomingCall {
                        call_id: id,
                        from: user.clone(),
                        offer,
                    },
                );
                self.send_to(user, conn, Event::Ringing { call_id: id });
                self.call_peers.pair(user.as_str(), to.as_str());
                Ok(Some(id))
            }
            CallAction::Accept { id, answer } => {
                self.calls.handle_accept(now, user, id)?;
                if let Some(bound) = self.bound.get_mut(&id) {
                    bound.callee = Some(conn);
                    let setup = now.saturating_duration_since(bound.invited);
                    METRICS.call_answered(setup);
                    info!(call = %id, setup_ms = setup.as_millis() as u64, "call accepted");
                }
                self.tell_others(user, conn, id, true);
                self.pending_answer(id, answer);
                Ok(None)
            }
            CallAction::Reject(id) => Ok(self.calls.handle_reject(now, user, id).map(|()| None)?),
            CallAction::Cancel(id) => Ok(self.calls.handle_cancel(now, user, id).map(|()| None)?),
            CallAction::Hangup(id) => Ok(self.calls.handle_hangup(now, user, id).map(|()| None)?),
        }
    }

    /// Sends the callee's answer to the caller of the call just accepted.
    fn pending_answer(&mut self, id: CallId, answer: Value) {
        while let Some(event) = self.calls.poll_event() {
            match event {
                CallEvent::Accepted {
                    id: accepted,
                    caller,
                    ..
                } if accepted == id => {
                    let bound = self.bound.get(&id).copied();
                    self.send_call(
                        &caller,
                        bound.map(|b| b.caller),
                        Event::Accepted {
                            call_id: id,
                            answer,
                        },
                    );
                    return;
                }
                other => self.on_call_event(other),
            }
        }
    }

    fn record_busy(&mut self, now: Instant, caller: &UserName, callee: &UserName) {
        let at = self.clock.unix_ms(now);
        let record = CallRecord {
            call_id: self.calls.allocate_id(),
            caller: caller.clone(),
            callee: callee.clone(),
            created: at,
            answered: None,
            ended: at,
            end_reason: EndReason::Busy,
        };
        METRICS.call_ended(EndReason::Busy);
        info!(call = %record.call_id, caller = %Pii(caller), callee = %Pii(callee), "call busy");
        self.db.submit("record busy call", move |conn| {
            store::record_call(conn, &record)
        });
    }

    /// Acts on everything the call machine reported, then logs out stuck sessions
    /// (which may end more calls) until nothing is left.
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some(event) = self.calls.poll_event() {
                self.on_call_event(event);
            }
            let Some((user, conn)) = self.stuck.pop() else {
                break;
            };
            self.logout(now, &user, conn);
        }
        self.acting = None;
    }

    fn on_call_event(&mut self, event: CallEvent) {
        let ended = match event {
            CallEvent::Accepted { id, .. } => {
                debug!(call = %id, "accepted without a pending answer");
                return;
            }
            CallEvent::Ended(ended) => ended,
        };
        self.record(&ended);
        self.call_peers
            .unpair(ended.caller.as_str(), ended.callee.as_str());
        let (call_id, reason) = (ended.id, ended.reason);
        METRICS.call_ended(reason);
        let talked = ended
            .answered
            .map(|at| ended.ended.saturating_duration_since(at));
        info!(
            call = %call_id,
            reason = reason.as_str(),
            talked_s = talked.map_or(0.0, |t| t.as_secs_f64()),
            answered = talked.is_some(),
            "call ended"
        );
        let event = match reason {
            EndReason::Rejected => Event::Rejected { call_id, reason },
            EndReason::Cancelled => Event::Cancelled { call_id, reason },
            EndReason::Missed => Event::Missed { call_id, reason },
            _ => Event::Hangup { call_id, reason },
        };
        let bound = self.bound.remove(&call_id);
        for user in ended.to_notify() {
            let conn = bound.and_then(|b| {
                if *user == ended.caller {
                    Some(b.caller)
                } else {
                    b.callee
                }
            });
            self.send_call(&user.clone(), conn, event.clone());
        }
        // The callee's other sessions that were ringing: the call is gone.
        let callee_acted = ended.ended_by.as_ref() == Some(&ended.callee);
        if callee_acted
            && bound.is_some_and(|b| b.callee.is_none())
            && let Some(actor) = self.acting
        {
            self.tell_others(&ended.callee.clone(), actor, call_id, false);
        }
    }

    /// Tells `user`'s sessions other than `conn` that `conn` took (or declined) the call.
    fn tell_others(&mut self, user: &UserName, conn: ConnId, call_id: CallId, accepted: bool) {
        let others: Vec<ConnId> = self.sessions.get(user).map_or_else(Vec::new, |sessions| {
            sessions
                .iter()
                .map(|s| s.conn)
                .filter(|&c| c != conn)
                .collect()
        });
        for other in others {
            self.send_to(user, other, Event::AnsweredElsewhere { call_id, accepted });
        }
    }

    /// Sends an event about a call to the session `conn` of `user` it belongs to, or to
    /// all of `user`'s sessions while it rings.
    fn send_call(&mut self, user: &UserName, conn: Option<ConnId>, event: Event) -> bool {
        match conn {
            Some(conn) => self.send_to(user, conn, event),
            None => self.send(user, event),
        }
    }

    fn record(&self, ended: &EndedCall) {
        let record = CallRecord {
            call_id: ended.id,
            caller: ended.caller.clone(),
            callee: ended.callee.clone(),
            created: self.clock.unix_ms(ended.created),
            answered: ended.answered.map(|at| self.clock.unix_ms(at)),
            ended: self.clock.unix_ms(ended.ended),
            end_reason: ended.reason,
        };
        self.db
            .submit("record call", move |conn| store::record_call(conn, &record));
    }

    /// Queues an event for every session of a user; `false` if they are offline. A full
    /// queue marks the session stuck: it is logged out and its connection closes.
    fn send(&mut self, user: &UserName, event: Event) -> bool {
        let conns: Vec<ConnId> = self
            .sessions
            .get(user)
            .map_or_else(Vec::new, |s| s.iter().map(|s| s.conn).collect());
        let mut delivered = false;
        for conn in conns {
            delivered |= self.send_to(user, conn, event.clone());
        }
        delivered
    }

    /// Queues an event for one session of a user.
    fn send_to(&mut self, user: &UserName, conn: ConnId, event: Event) -> bool {
        let Some(session) = self
            .sessions
            .get(user)
            .and_then(|s| s.iter().find(|s| s.conn == conn))
        else {
            return false;
        };
        match session.tx.try_send(Outbound::Event(event)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(user = %Pii(&user), "event queue full; dropping the session");
                self.stuck.push((user.clone(), conn));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
