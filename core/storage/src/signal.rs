//! Single-thread wake-up primitives for one shard: a oneshot and a doorbell. No locks and
//! no atomics: everything here lives on the shard that made it (`Rc`, hence `!Send`).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
}

/// Sends one value to the matching [`Receiver`].
pub struct Sender<T>(Rc<RefCell<Slot<T>>>);
/// Resolves to `Some(value)`, or `None` when the sender was dropped without sending.
pub struct Receiver<T>(Rc<RefCell<Slot<T>>>);

pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        sender_gone: false,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.sender_gone = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.0.borrow_mut();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Some(v));
        }
        if slot.sender_gone {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    /// A receiver given up on (a long poll answered by another partition, a timeout) lets go
    /// of its waker at once, though its sender may live on in a wait list.
    fn drop(&mut self) {
        self.0.borrow_mut().waker = None;
    }
}

impl<T> Receiver<T> {
    /// The value, if it was sent already (without waiting).
    pub fn try_take(&mut self) -> Option<T> {
        self.0.borrow_mut().value.take()
    }

    /// False once the receiver was dropped: sending to it would reach nobody.
    fn sender_has_receiver(sender: &Sender<T>) -> bool {
        Rc::strong_count(&sender.0) > 1
    }
}

/// A doorbell with one listener: `ring` sets it, `wait` resolves once it is set and clears it.
/// Rings while nobody waits are remembered (once), so no wake-up is lost.
#[derive(Default)]
pub struct Doorbell {
    state: RefCell<(bool, Option<Waker>)>,
}

impl Doorbell {
    pub fn ring(&self) {
        let waker = {
            let mut s = self.state.borrow_mut();
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut s = self.state.borrow_mut();
            if s.0 {
                s.0 = false;
                Poll::Ready(())
            } else {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// Many waiters, woken all at once (each call to `wake_all`).
#[derive(Default)]
pub struct WaitList {
    waiters: RefCell<Vec<Sender<()>>>,
}

impl WaitList {
    pub fn register(&self) -> Receiver<()> {
        let (tx, rx) = oneshot();
        let mut waiters = self.waiters.borrow_mut();
        // Waiters that gave up (their receiver dropped) stay until the next `wake_all`; on a
        // log nobody appends to that is never, so they are pruned each time the list doubles
        // (amortised O(1) per registration, memory bounded by twice the live waiters).
        if waiters.len() >= 64 && waiters.len().is_power_of_two() {
            waiters.retain(Receiver::sender_has_receiver);
        }
        waiters.push(tx);
        rx
    }

    pub fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_that_gave_up_are_pruned_and_live_ones_still_woken() {
        let list = WaitList::default();
        let live = list.register();
        for _ in 0..10_000 {
            drop(list.register());
        }
        assert!(list.waiters.borrow().len() <= 128, "bounded, not 10,001");
        list.wake_all();
        assert_eq!(futures_lite::future::block_on(live), Some(()));
    }
}
