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
        self.waiters.borrow_mut().push(tx);
        rx
    }

    pub fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.send(());
        }
    }
}
