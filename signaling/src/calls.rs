//! The call state machine: sans-IO, time passed in.
//!
//! ```text
//! invite ──> Ringing ──accept──> Accepted ──hangup / peer-lost──> ended
//!               │
//!               ├─ reject ─────> ended (rejected)
//!               ├─ cancel ─────> ended (cancelled)
//!               ├─ ring timeout> ended (missed)
//!               └─ peer-lost ──> ended (peer-lost)
//! ```
//!
//! The machine knows nothing about sockets or who is online: the hub feeds it
//! requests with `handle_*`/`drop_user`, advances it with [`Calls::handle_timeout`],
//! sleeps until [`Calls::poll_timeout`] and acts on [`Calls::poll_event`]. One call
//! per user at a time.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::pii::Pii;
use crate::proto::{CallId, EndReason, UserName};

/// A request the call state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Caller and callee are the same user.
    #[error("you cannot call yourself")]
    SelfCall,
    /// The caller is already in a call.
    #[error("you are already in a call")]
    AlreadyInCall,
    /// The callee is already in a call.
    #[error("{0} is in another call")]
    Busy(UserName),
    /// No such call, or the user is not a party to it.
    #[error("no call {0} of yours")]
    NoSuchCall(CallId),
    /// The call exists but this request does not fit its state or the user's role.
    #[error("call {id} cannot be {action}: {why}")]
    WrongState {
        /// The call.
        id: CallId,
        /// The refused action.
        action: &'static str,
        /// Why.
        why: &'static str,
    },
}

/// What the machine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// The callee accepted.
    Accepted {
        /// The call.
        id: CallId,
        /// Who called.
        caller: UserName,
        /// Who accepted.
        callee: UserName,
    },
    /// The call is over; both parties are free again.
    Ended(EndedCall),
}

/// A finished call, for notifying the parties and recording history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedCall {
    /// The call.
    pub id: CallId,
    /// Who called.
    pub caller: UserName,
    /// Who was called.
    pub callee: UserName,
    /// When the invite arrived.
    pub created: Instant,
    /// When it was accepted, if it was.
    pub answered: Option<Instant>,
    /// When it ended.
    pub ended: Instant,
    /// Why.
    pub reason: EndReason,
    /// The party whose request or loss ended it; `None` for the ring timeout and shutdown.
    pub ended_by: Option<UserName>,
}

impl EndedCall {
    /// The party that did not end the call, or both when nobody did.
    pub fn to_notify(&self) -> Vec<&UserName> {
        match &self.ended_by {
            Some(by) if *by == self.caller => vec![&self.callee],
            Some(_) => vec![&self.caller],
            None => vec![&self.caller, &self.callee],
        }
    }
}

#[derive(Debug)]
struct Call {
    caller: UserName,
    callee: UserName,
    created: Instant,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Ringing { deadline: Instant },
    Accepted { at: Instant },
}

/// All calls in progress.
#[derive(Debug)]
pub struct Calls {
    ring_timeout: Duration,
    next_id: u64,
    calls: HashMap<CallId, Call>,
    by_user: HashMap<UserName, CallId>,
    events: VecDeque<CallEvent>,
}

impl Calls {
    /// A machine whose first call gets id `first_id` and whose calls ring for `ring_timeout`.
    pub fn new(ring_timeout: Duration, first_id: u64) -> Self {
        Self {
            ring_timeout,
            next_id: first_id,
            calls: HashMap::new(),
            by_user: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Starts a call; it rings until accepted, refused or timed out.
    pub fn handle_invite(
        &mut self,
        now: Instant,
        caller: &UserName,
        callee: &UserName,
    ) -> Result<CallId, CallError> {
        if caller == callee {
            return Err(CallError::SelfCall);
        }
        if self.by_user.contains_key(caller) {
            return Err(CallError::AlreadyInCall);
        }
        if self.by_user.contains_key(callee) {
            return Err(CallError::Busy(callee.clone()));
        }
        let id = self.allocate_id();
        let deadline = now + self.ring_timeout;
        let call = Call {
            caller: caller.clone(),
            callee: callee.clone(),
            created: now,
            state: State::Ringing { deadline },
        };
        self.calls.insert(id, call);
        self.by_user.insert(caller.clone(), id);
        self.by_user.insert(callee.clone(), id);
        debug!(call = %id, caller = %Pii(&caller), callee = %Pii(&callee), "ringing");
        Ok(id)
    }

    /// Takes the next id for a call that will never ring (a `busy` attempt), so
    /// history rows stay unique.
    pub fn allocate_id(&mut self) -> CallId {
        let id = CallId(self.next_id);
        self.next_id += 1;
        id
    }

    /// The callee answers.
    pub fn handle_accept(
        &mut self,
        now: Instant,
        user: &UserName,
        id: CallId,
    ) -> Result<(), CallError> {
        let call = self.party_call(user, id)?;
        if call.callee != *user {
            return Err(wrong(id, "accepted", "only the callee can accept"));
        }
        if let State::Accepted { .. } = call.state {
            return Err(wrong(id, "accepted", "it is already accepted"));
        }
        call.state = State::Accepted { at: now };
        let event = CallEvent::Accepted {
            id,
            caller: call.caller.clone(),
            callee: call.callee.clone(),
        };
        debug!(call = %id, "accepted");
        self.events.push_back(event);
        Ok(())
    }

    /// The callee declines a ringing call.
    pub fn handle_reject(
        &mut self,
        now: Instant,
        user: &UserName,
        id: CallId,
    ) -> Result<(), CallError> {
        self.end_ringing(now, user, id, EndReason::Rejected)
    }

    /// The caller withdraws a ringing call.
    pub fn handle_cancel(
        &mut self,
        now: Instant,
        user: &UserName,
        id: CallId,
    ) -> Result<(), CallError> {
        self.end_ringing(now, user, id, EndReason::Cancelled)
    }

    /// Ends a ringing call for the party allowed to: the callee rejects, the caller cancels.
    fn end_ringing(
        &mut self,
        now: Instant,
        user: &UserName,
        id: CallId,
        reason: EndReason,
    ) -> Result<(), CallError> {
        let call = self.party_call(user, id)?;
        let (allowed, action, why) = if reason == EndReason::Rejected {
            (
                &call.callee,
                "rejected",
                "only the callee can reject; the caller cancels",
            )
        } else {
            (
                &call.caller,
                "cancelled",
                "only the caller can cancel; the callee rejects",
            )
        };
        if allowed != user {
            return Err(wrong(id, action, why));
        }
        if let State::Accepted { .. } = call.state {
            return Err(wrong(id, action, "it is already accepted; hang up instead"));
        }
        self.end(now, id, reason, Some(user.clone()));
        Ok(())
    }

    /// Either party ends an accepted call.
    pub fn handle_hangup(
        &mut self,
        now: Instant,
        user: &UserName,
        id: CallId,
    ) -> Result<(), CallError> {
        let call = self.party_call(user, id)?;
        if let State::Ringing { .. } = call.state {
            return Err(wrong(
                id,
                "hung up",
                "it is not accepted yet; cancel or reject instead",
            ));
        }
        self.end(now, id, EndReason::Hangup, Some(user.clone()));
        Ok(())
    }

    /// A user's connection is gone: their call, if any, ends with `reason`
    /// (`peer-lost` normally, `server-shutdown` when stopping).
    pub fn drop_user(&mut self, now: Instant, user: &UserName, reason: EndReason) {
        if let Some(&id) = self.by_user.get(user) {
            self.end(now, id, reason, Some(user.clone()));
        }
    }

    /// Ends every call (server shutdown).
    pub fn end_all(&mut self, now: Instant, reason: EndReason) {
        let mut ids: Vec<CallId> = self.calls.keys().copied().collect();
        ids.sort();
        for id in ids {
            self.end(now, id, reason, None);
        }
    }

    /// Ends calls whose ring timeout has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired: Vec<CallId> = self
            .calls
            .iter()
            .filter(
                |(_, call)| matches!(call.state, State::Ringing { deadline } if deadline <= now),
            )
            .map(|(&id, _)| id)
            .collect();
        expired.sort();
        for id in expired {
            self.end(now, id, EndReason::Missed, None);
        }
    }

    /// When [`Calls::handle_timeout`] next has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter_map(|call| match call.state {
                State::Ringing { deadline } => Some(deadline),
                State::Accepted { .. } => None,
            })
            .min()
    }

    /// The next thing that happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// The call a user is in, if any.
    pub fn call_of(&self, user: &UserName) -> Option<CallId> {
        self.by_user.get(user).copied()
    }

    /// The other party of call `id`, if it is live (ringing or answered) and `user` is a
    /// party of it.
    pub fn peer_of(&self, user: &UserName, id: CallId) -> Option<&UserName> {
        let call = self.calls.get(&id)?;
        if call.caller == *user {
            Some(&call.callee)
        } else if call.callee == *user {
            Some(&call.caller)
        } else {
            None
        }
    }

    /// The number of calls in progress.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    fn party_call(&mut self, user: &UserName, id: CallId) -> Result<&mut Call, CallError> {
        match self.calls.get_mut(&id) {
            Some(call) if call.caller == *user || call.callee == *user => Ok(call),
            _ => Err(CallError::NoSuchCall(id)),
        }
    }

    fn end(&mut self, now: Instant, id: CallId, reason: EndReason, ended_by: Option<UserName>) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.by_user.remove(&call.caller);
        self.by_user.remove(&call.callee);
        let answered = match call.state {
            State::Accepted { at } => Some(at),
            State::Ringing { .. } => None,
        };
        debug!(call = %id, reason = reason.as_str(), "ended");
        self.events.push_back(CallEvent::Ended(EndedCall {
            id,
            caller: call.caller,
            callee: call.callee,
            created: call.created,
            answered,
            ended: now,
            reason,
            ended_by,
        }));
    }
}

fn wrong(id: CallId, action: &'static str, why: &'static str) -> CallError {
    CallError::WrongState { id, action, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: Duration = Duration::from_secs(30);

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    fn setup() -> (Calls, Instant, UserName, UserName) {
        (
            Calls::new(RING, 1),
            Instant::now(),
            user("alice"),
            user("bob"),
        )
    }

    fn ended(calls: &mut Calls) -> EndedCall {
        match calls.poll_event() {
            Some(CallEvent::Ended(ended)) => ended,
            other => panic!("expected an end, got {other:?}"),
        }
    }

    #[test]
    fn accepted_call_ends_with_hangup_by_either_party() {
        let (mut calls, t0, alice, bob) = setup();
        let id = calls.handle_invite(t0, &alice, &bob).unwrap();
        calls
            .handle_accept(t0 + Duration::from_secs(2), &bob, id)
            .unwrap();
        assert!(matches!(
            calls.poll_event(),
            Some(CallEvent::Accepted { .. })
        ));
        assert_eq!(
            calls.poll_timeout(),
            None,
            "an accepted call has no ring timer"
        );
        calls
            .handle_hangup(t0 + Duration::from_secs(60), &alice, id)
            .unwrap();
        let end = ended(&mut calls);
        assert_eq!(end.reason, EndReason::Hangup);
        assert_eq!(end.answered, Some(t0 + Duration::from_secs(2)));
        assert_eq!(end.to_notify(), vec![&bob]);
        assert!(calls.is_empty() && calls.call_of(&alice).is_none());
    }

    #[test]
    fn ring_timeout_gives_missed_to_both() {
        let (mut calls, t0, alice, bob) = setup();
        let id = calls.handle_invite(t0, &alice, &bob).unwrap();
        assert_eq!(calls.poll_timeout(), Some(t0 + RING));
        calls.handle_timeout(t0 + RING - Duration::from_millis(1));
        assert_eq!(calls.poll_event(), None);
        calls.handle_timeout(t0 + RING);
        let end = ended(&mut calls);
        assert_eq!(
            (end.id, end.reason, end.answered),
            (id, EndReason::Missed, None)
        );
        assert_eq!(end.to_notify(), vec![&alice, &bob]);
    }

    #[test]
    fn only_the_callee_accepts_or_rejects_and_only_the_caller_cancels() {
        let (mut calls, t0, alice, bob) = setup();
        let id = calls.handle_invite(t0, &alice, &bob).unwrap();
        assert!(matches!(
            calls.handle_accept(t0, &alice, id),
            Err(CallError::WrongState { .. })
        ));
        assert!(matches!(
            calls.handle_reject(t0, &alice, id),
            Err(CallError::WrongState { .. })
        ));
        assert!(matches!(
            calls.handle_cancel(t0, &bob, id),
            Err(CallError::WrongState { .. })
        ));
        assert!(matches!(
            calls.handle_hangup(t0, &bob, id),
            Err(CallError::WrongState { .. })
        ));
        calls.handle_reject(t0, &bob, id).unwrap();
        assert_eq!(ended(&mut calls).to_notify(), vec![&alice]);
    }

    #[test]
    fn cancel_before_accept_tells_the_callee() {
        let (mut calls, t0, alice, bob) = setup();
        let id = calls.handle_invite(t0, &alice, &bob).unwrap();
        calls.handle_cancel(t0, &alice, id).unwrap();
        let end = ended(&mut calls);
        assert_eq!(
            (end.reason, end.to_notify()),
            (EndReason::Cancelled, vec![&bob])
        );
        assert_eq!(
            calls.handle_cancel(t0, &alice, id),
            Err(CallError::NoSuchCall(id))
        );
    }

    #[test]
    fn cancel_after_accept_is_refused() {
        let (mut calls, t0, alice, bob) = setup();
        let id = calls.handle_invite(t0, &alice, &bob).unwrap();
        calls.handle_accept(t0, &bob, id).unwrap();
        assert!(matches!(
            calls.handle_cancel(t0, &alice, id),
            Err(CallError::WrongState { .. })
        ));
        assert!(matches!(
            calls.handle_accept(t0, &bob, id),
            Err(CallError::WrongState { .. })
        ));
    }

    #[test]
    fn one_call_per_user() {
        let (mut calls, t0, alice, bob) = setup();
        let carol = user("carol");
        calls.handle_invite(t0, &alice, &bob).unwrap();
        assert_eq!(
            calls.handle_invite(t0, &carol, &bob),
            Err(CallError::Busy(bob.clone()))
        );
        assert_eq!(
            calls.handle_invite(t0, &alice, &carol),
            Err(CallError::AlreadyInCall)
        );
        assert_eq!(
            calls.handle_invite(t0, &carol, &carol),
            Err(CallError::SelfCall)
        );
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn lost_party_ends_the_call_for_the_other() {
        let (mut calls, t0, alice, bob) = setup();
        let id = calls.handle_invite(t0, &alice, &bob).unwrap();
        calls.handle_accept(t0, &bob, id).unwrap();
        let _ = calls.poll_event();
        calls.drop_user(t0 + Duration::from_secs(5), &bob, EndReason::PeerLost);
        let end = ended(&mut calls);
        assert_eq!(
            (end.reason, end.to_notify()),
            (EndReason::PeerLost, vec![&alice])
        );
        calls.drop_user(t0, &bob, EndReason::PeerLost);
        assert_eq!(
            calls.poll_event(),
            None,
            "a user without a call ends nothing"
        );
    }

    #[test]
    fn only_parties_of_a_live_call_have_a_peer() {
        let (mut calls, now, alice, bob) = setup();
        let id = calls.handle_invite(now, &alice, &bob).unwrap();
        assert_eq!(calls.peer_of(&alice, id), Some(&bob));
        assert_eq!(calls.peer_of(&bob, id), Some(&alice));
        assert_eq!(calls.peer_of(&user("carol"), id), None);
        assert_eq!(calls.peer_of(&alice, CallId(id.0 + 1)), None);
        calls.handle_cancel(now, &alice, id).unwrap();
        assert_eq!(calls.peer_of(&alice, id), None, "an ended call has no peer");
    }

    #[test]
    fn strangers_cannot_touch_a_call() {
        let (mut calls, t0, alice, bob) = setup();
        let id = calls.handle_invite(t0, &alice, &bob).unwrap();
        let mallory = user("mallory");
        assert_eq!(
            calls.handle_accept(t0, &mallory, id),
            Err(CallError::NoSuchCall(id))
        );
        assert_eq!(
            calls.handle_hangup(t0, &mallory, CallId(99)),
            Err(CallError::NoSuchCall(CallId(99)))
        );
    }

    #[test]
    fn ids_keep_increasing_from_the_first() {
        let mut calls = Calls::new(RING, 41);
        let t0 = Instant::now();
        let (a, b, c, d) = (user("aaa"), user("bbb"), user("ccc"), user("ddd"));
        assert_eq!(calls.handle_invite(t0, &a, &b), Ok(CallId(41)));
        assert_eq!(calls.allocate_id(), CallId(42));
        assert_eq!(calls.handle_invite(t0, &c, &d), Ok(CallId(43)));
    }

    #[test]
    fn shutdown_ends_every_call_for_both_parties() {
        let (mut calls, t0, alice, bob) = setup();
        let (c, d) = (user("ccc"), user("ddd"));
        calls.handle_invite(t0, &alice, &bob).unwrap();
        calls.handle_invite(t0, &c, &d).unwrap();
        calls.end_all(t0, EndReason::ServerShutdown);
        assert_eq!(ended(&mut calls).to_notify().len(), 2);
        assert_eq!(ended(&mut calls).reason, EndReason::ServerShutdown);
        assert!(calls.is_empty());
    }
}
