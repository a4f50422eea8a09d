//! The link thread: the hub's only way to Redis. It owns the command connection
//! (publish and load scripts), starts the subscriber, notices when Redis goes away,
//! keeps what is published meanwhile, and reconnects with backoff.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, select};
use redis::Script;

use super::subscriber::{self, Subscription};
use crate::hub::cluster::{FromLink, LinkState, LinkStatus, Outbound, ToLink};
use crate::hub::{self};

/// Longest wait for Redis to accept a connection, or to answer a command.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// A quiet link pings Redis this often, so a vanished server is noticed.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// First pause before reconnecting; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

const PUBLISH_SCRIPT: &str = include_str!("publish.lua");
const LOAD_SCRIPT: &str = include_str!("load.lua");

/// What the link needs to know.
pub struct LinkSettings {
    /// The Redis client (parsed URL).
    pub client: redis::Client,
    /// Messages kept while Redis is unreachable.
    pub queue: usize,
    /// Messages each room's stream keeps (`--history`).
    pub history: usize,
    /// This instance's name on the wire.
    pub origin: u64,
    /// The hub.
    pub hub: hub::Handle,
    /// Figures for `/stats`.
    pub status: Arc<LinkStatus>,
}

/// Runs the link until the hub drops its end of `requests`.
pub fn run(settings: LinkSettings, requests: &Receiver<ToLink>) {
    let (lost_tx, lost_rx) = crossbeam_channel::unbounded();
    let mut link = Link {
        settings,
        connection: None,
        outbox: VecDeque::new(),
        generation: Arc::new(AtomicU64::new(0)),
        lost_tx,
        publish: Script::new(PUBLISH_SCRIPT),
        load: Script::new(LOAD_SCRIPT),
        backoff: MIN_BACKOFF,
        dropped_in_outage: 0,
        subscriber: None,
    };
    link.serve(requests, &lost_rx);
    link.end_subscription();
    if !link.outbox.is_empty() {
        log::warn!(
            "stopping with {} messages still queued for Redis: they were delivered on this instance only",
            link.outbox.len()
        );
    }
}

pub(super) struct Link {
    pub(super) settings: LinkSettings,
    /// The command connection while the link is up.
    pub(super) connection: Option<redis::Connection>,
    /// Published while Redis was unreachable, oldest first; already delivered here.
    pub(super) outbox: VecDeque<Outbound>,
    /// Bumped for each new subscription; an old subscriber sees it and ends.
    pub(super) generation: Arc<AtomicU64>,
    pub(super) lost_tx: Sender<u64>,
    pub(super) publish: Script,
    pub(super) load: Script,
    pub(super) backoff: Duration,
    pub(super) dropped_in_outage: u64,
    pub(super) subscriber: Option<thread::JoinHandle<()>>,
}

impl Link {
    fn serve(&mut self, requests: &Receiver<ToLink>, lost: &Receiver<u64>) {
        loop {
            if self.connection.is_none() {
                if let Err(e) = self.connect() {
                    self.went_down(&e);
                    // Wait before the next try, still serving the hub meanwhile.
                    let retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    loop {
                        match requests.recv_deadline(retry_at) {
                            Ok(request) => self.handle(request),
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    continue;
                }
            }
            select! {
                recv(requests) -> request => match request {
                    Ok(request) => self.handle(request),
                    Err(_) => return, // the hub has stopped
                },
                recv(lost) -> generation => {
                    if generation.ok() == Some(self.generation.load(Ordering::Acquire)) {
                        self.went_down(&"the subscription connection failed".into());
                    }
                }
                default(HEARTBEAT) => {
                    if let Some(connection) = self.connection.as_mut() {
                        if let Err(e) = redis::cmd("PING").query::<()>(connection) {
                            self.went_down(&e.to_string());
                        }
                    }
                }
            }
        }
    }

    /// Connects, subscribes, forwards what waited in the outbox, and tells the hub
    /// the rooms are shared again.
    fn connect(&mut self) -> Result<(), String> {
        let connection = self
            .settings
            .client
            .get_connection_with_timeout(REDIS_TIMEOUT)
            .map_err(|e| e.to_string())?;
        connection
            .set_read_timeout(Some(REDIS_TIMEOUT))
            .and_then(|()| connection.set_write_timeout(Some(REDIS_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        self.subscribe()?;
        self.connection = Some(connection);
        // What was published here during the outage goes out first, in order.
        while let Some(outbound) = self.outbox.pop_front() {
            if let Err(e) = self.store(&outbound) {
                self.outbox.push_front(outbound);
                self.show_queue();
                self.connection = None;
                return Err(e.to_string());
            }
        }
        self.show_queue();
        if self.dropped_in_outage > 0 {
            log::warn!(
                "{} messages published during the Redis outage were delivered on this instance only (--redis-queue {} was full)",
                self.dropped_in_outage,
                self.settings.queue
            );
            self.dropped_in_outage = 0;
        }
        self.backoff = MIN_BACKOFF;
        let status = &self.settings.status;
        status.connects.fetch_add(1, Ordering::Relaxed);
        status.set_state(LinkState::Up);
        log::info!(
            "Redis link up ({}): rooms are shared with every instance",
            self.settings.client.get_connection_info().addr()
        );
        let _ = self.settings.hub.link(FromLink::Up);
        Ok(())
    }

    /// Starts a subscriber on a connection of its own and waits for Redis to confirm.
    fn subscribe(&mut self) -> Result<(), String> {
        self.end_subscription();
        let connection = self
            .settings
            .client
            .get_connection_with_timeout(REDIS_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let subscription = Subscription {
            connection,
            generation,
            current: Arc::clone(&self.generation),
            hub: self.settings.hub.clone(),
            lost: self.lost_tx.clone(),
            origin: self.settings.origin,
        };
        self.subscriber =
            Some(subscriber::spawn(subscription, ready_tx).map_err(|e| e.to_string())?);
        match ready_rx.recv_timeout(REDIS_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis did not confirm the subscription".into()),
        }
    }

    /// Stops the current subscriber (it sees the generation move) and waits for it.
    fn end_subscription(&mut self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(subscriber) = self.subscriber.take() {
            let _ = subscriber.join();
        }
    }

    /// Redis is unreachable: the hub's rooms carry on alone until it is back.
    pub(super) fn went_down(&mut self, error: &String) {
        let status = &self.settings.status;
        if status.state() == LinkState::Up {
            log::warn!(
                "Redis link down: {error}; rooms carry on on this instance alone, reconnecting"
            );
            let _ = self.settings.hub.link(FromLink::Down);
        } else if status.error().is_empty() {
            log::warn!("cannot reach Redis: {error}; rooms are local until it answers");
        } else {
            log::debug!("Redis still unreachable: {error}");
        }
        status.set_state(LinkState::Down);
        status.set_error(error.clone());
        self.connection = None;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn handle(&mut self, request: ToLink) {
        match request {
            ToLink::Publish(outbound) => self.publish(*outbound),
            ToLink::Load { room } => self.load(&room),
        }
    }
}
