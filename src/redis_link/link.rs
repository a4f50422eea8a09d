//! The link thread: the hub's only way to Redis. It owns the command connection
//! (publish and load scripts), starts the subscriber, notices when Redis goes away,
//! keeps what is published meanwhile, and reconnects with backoff.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, select};
use redis::{Script, Value};

use super::subscriber::{self, Subscription};
use super::wire::{self, RoomKeys};
use crate::hub::cluster::{Arrival, FromLink, LinkState, LinkStatus, Outbound, ToLink};
use crate::hub::{self, Published};
use crate::protocol::envelope::{format_epoch, parse_epoch};
use crate::room;

/// Longest wait for Redis to accept a connection, or to answer a command.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// A quiet link pings Redis this often, so a vanished server is noticed.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// First pause before reconnecting; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a client id is remembered for de-duplication across instances.
pub const CLIENT_ID_LIFETIME_SECS: u64 = 3600;

const PUBLISH_SCRIPT: &str = include_str!("publish.lua");
const LOAD_SCRIPT: &str = include_str!("load.lua");

/// What the link needs to know.
pub struct Settings {
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
pub fn run(settings: Settings, requests: &Receiver<ToLink>) {
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

struct Link {
    settings: Settings,
    /// The command connection while the link is up.
    connection: Option<redis::Connection>,
    /// Published while Redis was unreachable, oldest first; already delivered here.
    outbox: VecDeque<Outbound>,
    /// Bumped for each new subscription; an old subscriber sees it and ends.
    generation: Arc<AtomicU64>,
    lost_tx: Sender<u64>,
    publish: Script,
    load: Script,
    backoff: Duration,
    dropped_in_outage: u64,
    subscriber: Option<thread::JoinHandle<()>>,
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
    fn went_down(&mut self, error: &String) {
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

    /// Up: Redis numbers and broadcasts the message, and the hub tells the publisher.
    /// Down: the hub delivers it here at once, and a copy waits for Redis.
    fn publish(&mut self, outbound: Outbound) {
        if self.connection.is_some() {
            match self.store(&outbound) {
                Ok(outcome) => {
                    let stored = FromLink::Stored(Box::new(outbound), outcome);
                    let _ = self.settings.hub.link(stored);
                    return;
                }
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    self.went_down(&e.to_string());
                }
                Err(e) => {
                    // Redis answered but refused (out of memory, …): nothing went out.
                    log::error!("Redis refused a message for room '{}': {e}", outbound.room);
                    self.settings.status.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        self.keep_for_later(&outbound);
        let _ = self
            .settings
            .hub
            .link(FromLink::PublishHere(Box::new(outbound)));
    }

    fn keep_for_later(&mut self, outbound: &Outbound) {
        let status = &self.settings.status;
        if self.outbox.len() >= self.settings.queue {
            status.dropped.fetch_add(1, Ordering::Relaxed);
            if self.dropped_in_outage == 0 {
                log::warn!(
                    "--redis-queue is full ({} messages): further messages are delivered on this instance only until Redis is back",
                    self.settings.queue
                );
            }
            self.dropped_in_outage += 1;
            return;
        }
        self.outbox.push_back(Outbound {
            room: outbound.room.clone(),
            message: outbound.message.clone(),
            cid: outbound.cid.clone(),
            from: None,
            reply: None,
            ts: outbound.ts,
            late: true,
            charge: None,
        });
        self.show_queue();
    }

    /// `/stats`' `queued`: what the outbox holds now.
    fn show_queue(&self) {
        let queued = self.outbox.len() as u64;
        self.settings.status.queued.store(queued, Ordering::Relaxed);
    }

    /// One round trip: the publish script numbers, keeps and broadcasts the message.
    fn store(&mut self, outbound: &Outbound) -> redis::RedisResult<Published> {
        let connection = self.connection.as_mut().ok_or_else(not_connected)?;
        let keys = RoomKeys::new(&outbound.room);
        let cid = outbound.cid.as_deref().unwrap_or("");
        let (epoch, id, duplicate): (String, u64, u8) = self
            .publish
            .key(&keys.epoch)
            .key(&keys.seq)
            .key(&keys.log)
            .key(&keys.channel)
            .key(keys.client_id(cid))
            .arg(format_epoch(room::new_epoch()))
            .arg(outbound.ts)
            .arg(wire::kind(&outbound.message))
            .arg(wire::format_origin(self.settings.origin))
            .arg(u8::from(outbound.late))
            .arg(cid)
            .arg(outbound.message.clone().into_data().as_ref())
            .arg(self.settings.history)
            .arg(CLIENT_ID_LIFETIME_SECS)
            .invoke(connection)?;
        Ok(Published {
            delivered: 0,
            id,
            epoch: parse_epoch(&epoch).unwrap_or_default(),
            duplicate: duplicate == 1,
        })
    }

    /// Reads a room's epoch and history and hands them to the hub.
    fn load(&mut self, room: &str) {
        let Some(connection) = self.connection.as_mut() else {
            return; // the hub learns the link is down and stops waiting
        };
        let keys = RoomKeys::new(room);
        let answer: redis::RedisResult<Value> = self
            .load
            .key(&keys.epoch)
            .key(&keys.log)
            .arg(format_epoch(room::new_epoch()))
            .arg(self.settings.history)
            .invoke(connection);
        match answer {
            Ok(value) => match parse_history(room, value, self.settings.origin) {
                Ok((epoch, messages)) => {
                    let _ = self.settings.hub.link(FromLink::Loaded {
                        room: room.to_string(),
                        epoch,
                        messages,
                    });
                }
                Err(e) => {
                    log::error!("cannot read room '{room}' from Redis: {e}");
                    self.went_down(&e);
                }
            },
            Err(e) => self.went_down(&e.to_string()),
        }
    }
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::NotConnected))
}

/// `[epoch, [[stream id, ["m", message]], …]]`, newest first, into the room's epoch
/// and its messages oldest first.
fn parse_history(room: &str, value: Value, me: u64) -> Result<(u64, Vec<Arrival>), String> {
    let Value::Array(mut parts) = value else {
        return Err("the load script answered with no array".into());
    };
    let (Some(Value::Array(entries)), Some(Value::BulkString(epoch))) = (parts.pop(), parts.pop())
    else {
        return Err("the load script's answer has the wrong shape".into());
    };
    let epoch = std::str::from_utf8(&epoch)
        .ok()
        .and_then(parse_epoch)
        .ok_or("the room's epoch in Redis is not 16 hex digits")?;
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries.into_iter().rev() {
        let Value::Array(mut entry) = entry else {
            continue;
        };
        let Some(Value::Array(fields)) = entry.pop() else {
            continue;
        };
        if let [Value::BulkString(name), Value::BulkString(bytes)] = &fields[..] {
            if name == b"m" {
                match wire::decode(room, bytes, me) {
                    Ok(arrival) => messages.push(arrival),
                    Err(e) => {
                        log::warn!("skipped a malformed message in room '{room}' history: {e}")
                    }
                }
            }
        }
    }
    Ok((epoch, messages))
}
