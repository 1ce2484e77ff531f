//! The parent's message router between the management broker and the worker.
//!
//! The broker turns management commands into [`Request`]s; the router answers what the parent
//! knows itself (pid, verb, mute, hold, auth-retry), forwards what only the running engine knows
//! (status, kill, client-kill, byte counts) to the worker as [`WorkerQuery`]s and turns the
//! replies into [`Response`]s. Client lifecycle events from the worker become `>CLIENT:`
//! notifications for the broker and are checked against what the parent granted.
//!
//! The router is plain state driven by the supervision loop (`run.rs`): every `on_*` method
//! returns the messages to send ([`Effects`]); it never does I/O itself, so its rules are unit
//! tested without processes.
//!
//! Dispatch rules (a violation is fatal for the sending child, see `run.rs`):
//! * a worker `Reply` must answer an outstanding query with the same id, and be of the kind the
//!   query expects;
//! * a worker `AuthRequest` is only legal when the engine was configured with `defer_auth`, and
//!   at most one per (cid, kid) may be outstanding;
//! * a worker `Client(Established)` must name a cid that is not established yet, with a virtual
//!   address inside the configured pool or one the parent granted (`ifconfig-push`);
//! * `Client(Disconnected)` / `Client(Floated)` must name a known cid (an instance that never
//!   authenticated is reported with `Disconnected` too, so unknown cids are accepted there only
//!   when they are not established — the event then carries no notification).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use bulwark_ipc::msg::clients::{
    AuthVerdict, ClientAuthRequest, ClientEvent, ClientOverrides, WorkerQuery, WorkerReply,
    WorkerStatus,
};
use bulwark_ipc::msg::engine::PoolData;
use bulwark_ipc::msg::mgmt::{
    AuthRetry, BackendError, ClientEventKind, EnvBlock, GlobalStats, MgmtEvent, MgmtSignal,
    RealAddr, Request, Response, SignalOutcome, StatusSnapshot,
};
use bulwark_ipc::msg::{ParentToBroker, ParentToWorker};

use crate::client_env::{Assigned, ClientEnv};

/// The title string of `version`, `help` and the status files' `TITLE`: OpenVPN's form (tools
/// parse the second word as a semantic version of the protocol level Bulwark implements), with
/// Bulwark's own tags.
pub fn title() -> String {
    format!(
        "OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (rustls)] [EPOLL] [MH/PKTINFO] [AEAD] [Bulwark {}]",
        env!("CARGO_PKG_VERSION")
    )
}

/// Errors of the router: a child broke the dispatch rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouterError {
    /// The worker sent something the rules do not allow now.
    #[error("worker: {0}")]
    Worker(String),
    /// The broker sent something the rules do not allow now.
    #[error("broker: {0}")]
    Broker(String),
}

/// A message the supervision loop must deliver.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// To the worker.
    Worker(ParentToWorker),
    /// To the broker.
    Broker(ParentToBroker),
}

/// What handling one message produced.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Messages to deliver, in order.
    pub out: Vec<Out>,
    /// A signal the management interface threw (the loop acts as for the OS signal).
    pub signal: Option<MgmtSignal>,
    /// A verb change for the parent's own log filter and the children.
    pub verb: Option<u8>,
    /// A mute change for the parent's log sink.
    pub mute: Option<u32>,
    /// The management hold was released.
    pub hold_released: bool,
    /// Authorisation requests for the loop to run (hooks, management client-auth).
    pub auth: Vec<ClientAuthRequest>,
    /// Clients that ended, for the disconnect hooks: (record, bytes in, bytes out, seconds).
    pub gone: Vec<(ClientRecord, u64, u64, u64)>,
    /// Clients that were established, for the established hooks.
    pub established: Vec<ClientRecord>,
}

/// An established client as the parent knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// Client id.
    pub cid: u64,
    /// Common name.
    pub common_name: String,
    /// Username.
    pub username: Option<String>,
    /// Link address.
    pub real_address: RealAddr,
    /// Virtual IPv4 address.
    pub vaddr: Option<Ipv4Addr>,
    /// Virtual IPv6 address.
    pub vaddr6: Option<std::net::Ipv6Addr>,
    /// iroutes.
    pub iroutes: Vec<(Ipv4Addr, u8)>,
    /// IPv6 iroutes.
    pub iroutes_v6: Vec<(std::net::Ipv6Addr, u8)>,
    /// Unix time of the connection.
    pub connected_since: i64,
    /// The client's environment list (`>CLIENT:ENV` order, see `client_env`).
    pub env: ClientEnv,
}

#[derive(Debug, Clone, PartialEq)]
enum Pending {
    /// A management request waiting for the worker.
    Broker { id: u64, req: Request },
}

/// Static facts the router needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The engine asks before admitting clients.
    pub defer_auth: bool,
    /// `management-client-auth`.
    pub mgmt_client_auth: bool,
    /// The address pool (for the address checks).
    pub pool: PoolData,
    /// Local UTC offset for the status snapshot.
    pub utc_offset_secs: i32,
    /// Variables every client environment ends with (daemon, device, local address ...), in
    /// emission order.
    pub daemon_env: Vec<(String, String)>,
    /// Initial verb.
    pub verb: u8,
    /// Initial mute.
    pub mute: u32,
    /// `management-hold`: the worker starts only after `hold release`.
    pub hold: bool,
}

/// The router's state.
#[derive(Debug)]
pub struct Router {
    cfg: RouterConfig,
    pid: u32,
    next_id: u64,
    pending: HashMap<u64, (WorkerQuery, Pending)>,
    clients: HashMap<u64, ClientRecord>,
    auth_inflight: HashSet<(u64, u32)>,
    granted: HashMap<u64, ClientOverrides>,
    /// Clients that had a `>CLIENT:CONNECT` (they get a DISCONNECT notification).
    announced: HashSet<u64>,
    /// Environment lists of clients not established yet.
    envs: HashMap<u64, ClientEnv>,
    /// Clients admitted with `client-auth` config lines or a `client-connect` script (OpenVPN
    /// sets their address variables once more).
    readdress: HashSet<u64>,
    verb: u8,
    mute: u32,
    hold: bool,
    holding: bool,
    auth_retry: AuthRetry,
    worker_up: bool,
    /// What the parent counts for the metrics endpoint (the supervisor increments them).
    pub counters: bulwark_ipc::msg::mgmt::ParentCounters,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Router {
    /// Takes the verbosity and mute of a reloaded configuration (SIGHUP), so the management
    /// `verb` and `mute` queries report what now applies.
    pub fn set_logging(&mut self, verb: u8, mute: u32) {
        self.verb = verb.min(11);
        self.mute = mute;
    }

    /// A router for a daemon with this pid.
    pub fn new(cfg: RouterConfig, pid: u32) -> Self {
        let hold = cfg.hold;
        Router {
            verb: cfg.verb,
            mute: cfg.mute,
            cfg,
            pid,
            next_id: 0,
            pending: HashMap::new(),
            clients: HashMap::new(),
            auth_inflight: HashSet::new(),
            granted: HashMap::new(),
            announced: HashSet::new(),
            envs: HashMap::new(),
            readdress: HashSet::new(),
            hold,
            holding: hold,
            auth_retry: AuthRetry::None,
            worker_up: false,
            counters: Default::default(),
        }
    }

    /// Whether the daemon waits for `hold release` before serving.
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// Whether client `cid` is established.
    pub fn is_established(&self, cid: u64) -> bool {
        self.clients.contains_key(&cid)
    }

    /// Number of established clients.
    pub fn nclients(&self) -> usize {
        self.clients.len()
    }

    /// The worker reported Ready.
    pub fn worker_started(&mut self) {
        self.worker_up = true;
    }

    /// The worker is gone: outstanding queries fail, clients are gone (they reconnect to the
    /// next worker), pending authorisations are void.
    pub fn worker_gone(&mut self) -> Effects {
        self.worker_up = false;
        let mut fx = Effects::default();
        for (_, (_, p)) in self.pending.drain() {
            let Pending::Broker { id, .. } = p;
            fx.out.push(Out::Broker(ParentToBroker::Response {
                id,
                result: Err(BackendError::Unavailable),
            }));
        }
        self.auth_inflight.clear();
        self.granted.clear();
        self.envs.clear();
        self.readdress.clear();
        let cids: Vec<u64> = self.clients.keys().copied().collect();
        for cid in cids {
            if let Some(rec) = self.clients.remove(&cid) {
                let dur = u64::try_from(unix_now() - rec.connected_since).unwrap_or(0);
                if self.announced.contains(&cid) {
                    fx.out
                        .push(Out::Broker(self.disconnect_event(cid, &rec, 0, 0, dur)));
                }
                fx.gone.push((rec, 0, 0, dur));
            }
        }
        self.announced.clear();
        fx
    }

    fn query(&mut self, query: WorkerQuery, p: Pending) -> Out {
        self.next_id += 1;
        let id = self.next_id;
        self.pending.insert(id, (query.clone(), p));
        Out::Worker(ParentToWorker::Query { id, query })
    }

    fn respond(id: u64, result: Result<Response, BackendError>) -> Out {
        Out::Broker(ParentToBroker::Response { id, result })
    }

    /// A request from the broker.
    pub fn on_broker_request(&mut self, id: u64, req: Request) -> Effects {
        let mut fx = Effects::default();
        let worker_query = match &req {
            Request::Status | Request::LoadStats | Request::NClients => Some(WorkerQuery::Status),
            Request::ByteCounts => Some(WorkerQuery::ByteCounts),
            Request::KillCommonName(cn) => Some(WorkerQuery::KillCommonName(cn.clone())),
            Request::KillAddress { ip, port } => Some(WorkerQuery::KillAddress {
                proto: None,
                ip: std::net::IpAddr::V4(*ip),
                port: *port,
            }),
            Request::ClientKill { cid, message } => Some(WorkerQuery::ClientKill {
                cid: *cid,
                message: message.clone(),
            }),
            _ => None,
        };
        if let Some(q) = worker_query {
            if !self.worker_up {
                fx.out
                    .push(Self::respond(id, Err(BackendError::Unavailable)));
            } else {
                let out = self.query(q, Pending::Broker { id, req });
                fx.out.push(out);
            }
            return fx;
        }
        let result = match req {
            Request::Info => Ok(Response::Info {
                pid: self.pid,
                title: title(),
            }),
            Request::Signal(sig) => {
                if self.holding && matches!(sig, MgmtSignal::Hup | MgmtSignal::Usr1) {
                    Ok(Response::Signal(SignalOutcome::IgnoredInHold))
                } else {
                    fx.signal = Some(sig);
                    Ok(Response::Signal(SignalOutcome::Thrown(
                        sig.name().to_string(),
                    )))
                }
            }
            Request::GetVerb => Ok(Response::Number(u32::from(self.verb))),
            Request::SetVerb(v) => {
                // OpenVPN accepts 0..=15; levels above 11 behave as 11.
                self.verb = v.min(11);
                fx.verb = Some(self.verb);
                Ok(Response::Done(true))
            }
            Request::GetMute => Ok(Response::Number(self.mute)),
            Request::SetMute(m) => {
                self.mute = m;
                fx.mute = Some(m);
                Ok(Response::Done(true))
            }
            Request::GetHold => Ok(Response::Flag(self.hold)),
            Request::SetHold(h) => {
                self.hold = h;
                Ok(Response::Done(true))
            }
            Request::HoldRelease => {
                if self.holding {
                    self.holding = false;
                    fx.hold_released = true;
                    fx.out.push(Out::Broker(ParentToBroker::Event(Box::new(
                        MgmtEvent::HoldReleased,
                    ))));
                }
                Ok(Response::Done(true))
            }
            Request::GetAuthRetry => Ok(Response::AuthRetry(self.auth_retry)),
            Request::SetAuthRetry(a) => {
                self.auth_retry = a;
                Ok(Response::Done(true))
            }
            // A server caches no passwords.
            Request::ForgetPasswords => Ok(Response::Done(true)),
            // The client-auth family is answered by the loop, which owns the waiting
            // authorisations (see `run.rs`); reaching here means it was not intercepted.
            Request::ClientAuth { .. }
            | Request::ClientAuthNt { .. }
            | Request::ClientDeny { .. }
            | Request::ClientPendingAuth { .. } => Ok(Response::Done(false)),
            Request::Status
            | Request::LoadStats
            | Request::NClients
            | Request::ByteCounts
            | Request::KillCommonName(_)
            | Request::KillAddress { .. }
            | Request::ClientKill { .. } => Err(BackendError::Unavailable),
        };
        fx.out.push(Self::respond(id, result));
        fx
    }

    /// A worker `Reply`.
    pub fn on_worker_reply(&mut self, id: u64, reply: WorkerReply) -> Result<Effects, RouterError> {
        let Some((query, pending)) = self.pending.remove(&id) else {
            return Err(RouterError::Worker(format!(
                "Reply with id {id} answers no outstanding query"
            )));
        };
        if !reply.answers(&query) {
            return Err(RouterError::Worker(format!(
                "Reply to {} has the wrong kind",
                query.name()
            )));
        }
        let mut fx = Effects::default();
        let Pending::Broker { id, req } = pending;
        let result = match (req, reply) {
            (Request::Status, WorkerReply::Status(s)) => {
                Ok(Response::Status(Box::new(self.snapshot(*s))))
            }
            (Request::LoadStats, WorkerReply::Status(s)) => Ok(Response::LoadStats {
                nclients: established_count(&s),
                bytes_in: s.link_bytes_in,
                bytes_out: s.link_bytes_out,
            }),
            (Request::NClients, WorkerReply::Status(s)) => {
                Ok(Response::Count(established_count(&s)))
            }
            (Request::ByteCounts, WorkerReply::ByteCounts(v)) => Ok(Response::ByteCounts(v)),
            (Request::KillCommonName(_) | Request::KillAddress { .. }, WorkerReply::Count(n)) => {
                Ok(Response::Count(n))
            }
            (Request::ClientKill { .. }, WorkerReply::Done(b)) => Ok(Response::Done(b)),
            (req, _) => Err(BackendError::UnexpectedResponse {
                request: req.name().to_string(),
            }),
        };
        fx.out.push(Self::respond(id, result));
        Ok(fx)
    }

    fn snapshot(&self, s: WorkerStatus) -> StatusSnapshot {
        StatusSnapshot {
            counters: bulwark_ipc::msg::mgmt::SnapshotCounters {
                engine: s.counters,
                parent: bulwark_ipc::msg::mgmt::ParentCounters {
                    log_lines_lost: crate::logging::lines_lost_total(),
                    ..self.counters
                },
                link_bytes_in: s.link_bytes_in,
                link_bytes_out: s.link_bytes_out,
            },
            title: title(),
            updated: unix_now(),
            utc_offset_secs: self.cfg.utc_offset_secs,
            clients: s.clients,
            routes: s.routes,
            global: GlobalStats {
                max_bcast_mcast_queue_len: Some(0),
                dco_enabled: false,
            },
        }
    }

    /// A worker `AuthRequest`: checked, then handed to the loop (hooks, management client-auth).
    pub fn on_auth_request(&mut self, req: ClientAuthRequest) -> Result<Effects, RouterError> {
        if !self.cfg.defer_auth {
            return Err(RouterError::Worker(
                "AuthRequest although the engine was configured without defer_auth".into(),
            ));
        }
        if !self.auth_inflight.insert((req.cid, req.kid)) {
            return Err(RouterError::Worker(format!(
                "second AuthRequest for client {} key {} while one is outstanding",
                req.cid, req.kid
            )));
        }
        if req.reauth && !self.clients.contains_key(&req.cid) {
            return Err(RouterError::Worker(format!(
                "re-authentication of client {} which is not established",
                req.cid
            )));
        }
        let mut fx = Effects::default();
        if self.cfg.mgmt_client_auth {
            self.announced.insert(req.cid);
        }
        let env = match self.clients.get_mut(&req.cid) {
            Some(rec) if req.reauth => &mut rec.env,
            _ => {
                if !req.reauth {
                    self.envs.insert(req.cid, ClientEnv::default());
                }
                self.envs.entry(req.cid).or_default()
            }
        };
        env.tls_verified(
            &req.cert_env,
            req.real_address.addr,
            &req.peer_info,
            &req.common_name,
            req.username
                .as_deref()
                .map(|u| (u, req.password.as_deref())),
        );
        fx.auth.push(req);
        Ok(fx)
    }

    /// The loop decided about an authorisation: the verdict goes to the worker. `readdress`:
    /// the client was configured by `client-auth` config lines or a `client-connect` script.
    pub fn auth_decided(
        &mut self,
        cid: u64,
        kid: u32,
        verdict: AuthVerdict,
        readdress: bool,
    ) -> Effects {
        let mut fx = Effects::default();
        // A pending verdict (`client-pending-auth`) leaves the authorisation open: the final
        // client-auth/client-deny still has to reach the worker.
        let open = if matches!(verdict, AuthVerdict::Pending { .. }) {
            self.auth_inflight.contains(&(cid, kid))
        } else {
            self.auth_inflight.remove(&(cid, kid))
        };
        if !open {
            // The worker died or restarted meanwhile: nothing to answer.
            return fx;
        }
        // As OpenVPN: the password leaves the environment once it has been checked.
        if let Some(e) = self.envs.get_mut(&cid) {
            e.del("password");
        }
        if let Some(rec) = self.clients.get_mut(&cid) {
            rec.env.del("password");
        }
        if let AuthVerdict::Accept(o) = &verdict {
            self.granted.insert(cid, (**o).clone());
            if readdress {
                self.readdress.insert(cid);
            }
        }
        fx.out.push(Out::Worker(ParentToWorker::AuthVerdict {
            cid,
            kid,
            verdict,
        }));
        fx
    }

    fn address_allowed(&self, cid: u64, a: Ipv4Addr) -> bool {
        let p = &self.cfg.pool;
        let in_pool = u32::from(a) >= u32::from(p.start) && u32::from(a) <= u32::from(p.end);
        let granted = self
            .granted
            .get(&cid)
            .and_then(|o| o.ifconfig_push)
            .is_some_and(|(l, _)| l == a);
        in_pool || granted
    }

    /// A worker client event.
    pub fn on_client_event(&mut self, ev: ClientEvent) -> Result<Effects, RouterError> {
        let mut fx = Effects::default();
        match ev {
            ClientEvent::Established {
                cid,
                common_name,
                username,
                real_address,
                vaddr,
                vaddr6,
                iroutes,
                iroutes_v6,
                connected_since,
                peer_info,
                cert_env,
                ..
            } => {
                if self.clients.contains_key(&cid) {
                    return Err(RouterError::Worker(format!(
                        "client {cid} reported established twice"
                    )));
                }
                if let Some(a) = vaddr {
                    if !self.address_allowed(cid, a) {
                        return Err(RouterError::Worker(format!(
                            "client {cid} established with {a}, outside the pool and not granted"
                        )));
                    }
                }
                if self.cfg.defer_auth {
                    let granted = self.granted.get(&cid);
                    let allowed =
                        |net: &(Ipv4Addr, u8)| granted.is_some_and(|g| g.iroutes.contains(net));
                    if let Some(bad) = iroutes.iter().find(|n| !allowed(n)) {
                        return Err(RouterError::Worker(format!(
                            "client {cid} established with iroute {}/{} the parent never granted",
                            bad.0, bad.1
                        )));
                    }
                } else if !iroutes.is_empty() || !iroutes_v6.is_empty() {
                    return Err(RouterError::Worker(format!(
                        "client {cid} established with iroutes although no hook granted any"
                    )));
                }
                let mut env = self.envs.remove(&cid).unwrap_or_else(|| {
                    // Admitted without asking the parent: the TLS-time variables come with
                    // the event.
                    let mut e = ClientEnv::default();
                    e.tls_verified(
                        &cert_env,
                        real_address.addr,
                        &peer_info,
                        &common_name,
                        username.as_deref().map(|u| (u, None)),
                    );
                    e
                });
                env.connected(
                    &common_name,
                    real_address.addr,
                    &self.cfg.pool,
                    Assigned {
                        v4: vaddr,
                        v6: vaddr6,
                    },
                    connected_since,
                    &ascii_time(connected_since, self.cfg.utc_offset_secs),
                    self.readdress.remove(&cid),
                );
                let rec = ClientRecord {
                    cid,
                    common_name,
                    username,
                    real_address,
                    vaddr,
                    vaddr6,
                    iroutes,
                    iroutes_v6,
                    connected_since,
                    env,
                };
                let n = u32::try_from(self.clients.len() + 1).unwrap_or(u32::MAX);
                if self.announced.contains(&cid) {
                    // The primary addresses (IPv4, then IPv6), then the iroutes, as OpenVPN
                    // learns them.
                    let primaries = rec
                        .vaddr
                        .map(|a| a.to_string())
                        .into_iter()
                        .chain(rec.vaddr6.map(|a| a.to_string()));
                    for addr in primaries {
                        fx.out.push(Out::Broker(ParentToBroker::Event(Box::new(
                            MgmtEvent::ClientAddress {
                                cid,
                                addr,
                                primary: true,
                            },
                        ))));
                    }
                    for (net, bits) in &rec.iroutes {
                        fx.out.push(Out::Broker(ParentToBroker::Event(Box::new(
                            MgmtEvent::ClientAddress {
                                cid,
                                addr: format!("{net}/{}", netmask(*bits)),
                                primary: false,
                            },
                        ))));
                    }
                    for (net, bits) in &rec.iroutes_v6 {
                        fx.out.push(Out::Broker(ParentToBroker::Event(Box::new(
                            MgmtEvent::ClientAddress {
                                cid,
                                addr: format!("{net}/{bits}"),
                                primary: false,
                            },
                        ))));
                    }
                }
                fx.out.push(Out::Broker(ParentToBroker::Event(Box::new(
                    MgmtEvent::Client {
                        cid,
                        kind: ClientEventKind::Established,
                        n_clients: n,
                        env: self.established_env(&rec),
                    },
                ))));
                fx.established.push(rec.clone());
                self.clients.insert(cid, rec);
            }
            ClientEvent::Disconnected {
                cid,
                reason: _,
                bytes_received,
                bytes_sent,
                duration_secs,
            } => {
                self.granted.remove(&cid);
                self.envs.remove(&cid);
                self.readdress.remove(&cid);
                self.auth_inflight.retain(|(c, _)| *c != cid);
                let announced = self.announced.remove(&cid);
                match self.clients.remove(&cid) {
                    // As OpenVPN: DISCONNECT only for clients that had a CONNECT notification
                    // (management-client-auth).
                    Some(rec) if !announced => {
                        fx.gone
                            .push((rec, bytes_received, bytes_sent, duration_secs));
                    }
                    Some(rec) => {
                        fx.out.push(Out::Broker(self.disconnect_event(
                            cid,
                            &rec,
                            bytes_received,
                            bytes_sent,
                            duration_secs,
                        )));
                        fx.gone
                            .push((rec, bytes_received, bytes_sent, duration_secs));
                    }
                    None if announced => {
                        // Denied or never established after a CONNECT: an empty block.
                        fx.out.push(Out::Broker(ParentToBroker::Event(Box::new(
                            MgmtEvent::Client {
                                cid,
                                kind: ClientEventKind::Disconnect,
                                n_clients: 0,
                                env: EnvBlock::default(),
                            },
                        ))));
                    }
                    None => {}
                }
            }
            ClientEvent::ExitAnnounced { cid } => {
                // As OpenVPN when a connected client announces its exit (explicit-exit-notify
                // on the control channel); a refused client's EXIT reaches an instance OpenVPN
                // has already closed.
                if self.clients.contains_key(&cid) {
                    fx.out.push(Out::Broker(ParentToBroker::Event(Box::new(
                        MgmtEvent::Notify("info,remote-exit,EXIT".into()),
                    ))));
                }
            }
            ClientEvent::CrResponse { cid, kid, response } => {
                // Only while that authorisation waits for management (`client-pending-auth`);
                // a response racing with the verdict is dropped, not a violation.
                if self.cfg.mgmt_client_auth && self.auth_inflight.contains(&(cid, kid)) {
                    if let Some(env) = self.envs.get(&cid) {
                        // OpenVPN's env by then also has the trusted address and common name
                        // of the initiated connection.
                        let mut env = env.clone();
                        env.initiated();
                        fx.out.push(Out::Broker(ParentToBroker::Event(Box::new(
                            MgmtEvent::Client {
                                cid,
                                kind: ClientEventKind::CrResponse { kid, response },
                                n_clients: u32::try_from(self.clients.len()).unwrap_or(u32::MAX),
                                env: self.with_daemon_env(&env, Vec::new()),
                            },
                        ))));
                    }
                }
            }
            ClientEvent::Floated { cid, real_address } => match self.clients.get_mut(&cid) {
                Some(rec) => rec.real_address = real_address,
                None => {
                    return Err(RouterError::Worker(format!(
                        "float of client {cid}, which is not established"
                    )))
                }
            },
        }
        Ok(fx)
    }

    /// The environment of an ESTABLISHED notification: the client's list, then the daemon's
    /// variables.
    fn established_env(&self, rec: &ClientRecord) -> EnvBlock {
        self.with_daemon_env(&rec.env, Vec::new())
    }

    fn with_daemon_env(&self, env: &ClientEnv, peer_info: Vec<String>) -> EnvBlock {
        let mut vars = env.vars().to_vec();
        vars.extend(self.cfg.daemon_env.iter().cloned());
        EnvBlock { vars, peer_info }
    }

    /// The environment of a DISCONNECT notification.
    fn disconnect_event(
        &self,
        cid: u64,
        rec: &ClientRecord,
        bytes_received: u64,
        bytes_sent: u64,
        duration_secs: u64,
    ) -> ParentToBroker {
        let mut env = rec.env.clone();
        env.disconnected(
            rec.real_address.addr,
            bytes_received,
            bytes_sent,
            duration_secs,
        );
        ParentToBroker::Event(Box::new(MgmtEvent::Client {
            cid,
            kind: ClientEventKind::Disconnect,
            n_clients: 0,
            env: self.with_daemon_env(&env, Vec::new()),
        }))
    }

    /// The environment of a CONNECT/REAUTH notification (password included: the broker shows
    /// it only to the `auth` role). Call after [`Router::on_auth_request`] for `req`.
    pub fn connect_env(&self, req: &ClientAuthRequest) -> EnvBlock {
        let empty = ClientEnv::default();
        let env = match self.clients.get(&req.cid) {
            Some(rec) if req.reauth => &rec.env,
            _ => self.envs.get(&req.cid).unwrap_or(&empty),
        };
        self.with_daemon_env(env, req.peer_info.clone())
    }
}

fn established_count(s: &WorkerStatus) -> u32 {
    u32::try_from(s.clients.iter().filter(|c| c.common_name.is_some()).count()).unwrap_or(u32::MAX)
}

fn netmask(bits: u8) -> Ipv4Addr {
    let m = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits.min(32)))
    };
    Ipv4Addr::from(m)
}

fn ascii_time(t: i64, offset: i32) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t + i64::from(offset)) {
        Ok(d) => crate::logging::timestamp(d),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_ipc::msg::mgmt::{ClientEntry, TransportProto};

    fn cfg(defer: bool) -> RouterConfig {
        RouterConfig {
            defer_auth: defer,
            mgmt_client_auth: defer,
            pool: bulwark_ipc::msg::engine::EngineConfig::minimal_for_tests().pool,
            utc_offset_secs: 0,
            daemon_env: vec![("dev".into(), "tun0".into())],
            verb: 3,
            mute: 0,
            hold: false,
        }
    }

    fn addr() -> RealAddr {
        RealAddr {
            proto: TransportProto::Udp,
            addr: "192.0.2.7:50000".parse().unwrap(),
        }
    }

    fn established(cid: u64, a: Ipv4Addr) -> ClientEvent {
        ClientEvent::Established {
            cid,
            common_name: "client1".into(),
            username: None,
            real_address: addr(),
            vaddr: Some(a),
            vaddr6: None,
            iroutes: vec![],
            iroutes_v6: vec![],
            peer_id: 0,
            cipher: "AES-256-GCM".into(),
            connected_since: 1_700_000_000,
            peer_info: vec!["IV_VER=2.6.14".into()],
            cert_env: vec![("X509_0_CN".into(), "client1".into())],
        }
    }

    fn worker_query(fx: &Effects) -> (u64, WorkerQuery) {
        match &fx.out[..] {
            [Out::Worker(ParentToWorker::Query { id, query })] => (*id, query.clone()),
            other => panic!("expected one query, got {other:?}"),
        }
    }

    #[test]
    fn status_goes_to_the_worker_and_back() {
        let mut r = Router::new(cfg(false), 42);
        // before the worker runs: unavailable
        let fx = r.on_broker_request(1, Request::Status);
        assert!(matches!(
            &fx.out[..],
            [Out::Broker(ParentToBroker::Response {
                id: 1,
                result: Err(BackendError::Unavailable)
            })]
        ));
        r.worker_started();
        let fx = r.on_broker_request(2, Request::LoadStats);
        let (qid, q) = worker_query(&fx);
        assert_eq!(q, WorkerQuery::Status);
        let status = WorkerStatus {
            counters: Default::default(),
            clients: vec![ClientEntry {
                common_name: Some("c".into()),
                real_address: addr(),
                virtual_v4: None,
                virtual_v6: None,
                bytes_received: 1,
                bytes_sent: 2,
                connected_since: 0,
                username: None,
                client_id: 0,
                peer_id: 0,
                data_cipher: "AES-256-GCM".into(),
            }],
            routes: vec![],
            link_bytes_in: 10,
            link_bytes_out: 20,
        };
        // a reply of the wrong kind is a violation
        assert!(r.on_worker_reply(qid, WorkerReply::Count(1)).is_err());
        let fx = r.on_broker_request(3, Request::LoadStats);
        let (qid, _) = worker_query(&fx);
        let fx = r
            .on_worker_reply(qid, WorkerReply::Status(Box::new(status)))
            .unwrap();
        assert_eq!(
            fx.out,
            vec![Out::Broker(ParentToBroker::Response {
                id: 3,
                result: Ok(Response::LoadStats {
                    nclients: 1,
                    bytes_in: 10,
                    bytes_out: 20
                })
            })]
        );
        // an unknown id is a violation
        assert!(r.on_worker_reply(999, WorkerReply::Done(true)).is_err());
    }

    #[test]
    fn local_requests_and_signals() {
        let mut r = Router::new(cfg(false), 42);
        let fx = r.on_broker_request(1, Request::Info);
        assert!(matches!(
            &fx.out[..],
            [Out::Broker(ParentToBroker::Response {
                result: Ok(Response::Info { pid: 42, .. }),
                ..
            })]
        ));
        let fx = r.on_broker_request(2, Request::Signal(MgmtSignal::Usr2));
        assert_eq!(fx.signal, Some(MgmtSignal::Usr2));
        let fx = r.on_broker_request(3, Request::SetVerb(15));
        assert_eq!(fx.verb, Some(11));
        let mut held = Router::new(
            RouterConfig {
                hold: true,
                ..cfg(false)
            },
            1,
        );
        assert!(held.holding());
        let fx = held.on_broker_request(1, Request::Signal(MgmtSignal::Hup));
        assert_eq!(fx.signal, None);
        let fx = held.on_broker_request(2, Request::HoldRelease);
        assert!(fx.hold_released);
        assert!(!held.holding());
    }

    #[test]
    fn worker_gone_fails_outstanding_queries() {
        let mut r = Router::new(cfg(false), 1);
        r.worker_started();
        let _ = r.on_broker_request(7, Request::Status);
        r.on_client_event(established(1, Ipv4Addr::new(10, 8, 0, 2)))
            .unwrap();
        let fx = r.worker_gone();
        assert!(fx.out.iter().any(|o| matches!(
            o,
            Out::Broker(ParentToBroker::Response {
                id: 7,
                result: Err(BackendError::Unavailable)
            })
        )));
        assert_eq!(fx.gone.len(), 1);
        assert_eq!(r.nclients(), 0);
    }

    #[test]
    fn established_address_checks() {
        let mut r = Router::new(cfg(false), 1);
        assert!(r
            .on_client_event(established(1, Ipv4Addr::new(10, 9, 0, 2)))
            .is_err());
        let fx = r
            .on_client_event(established(2, Ipv4Addr::new(10, 8, 0, 2)))
            .unwrap();
        assert!(fx.out.iter().any(|o| matches!(o, Out::Broker(ParentToBroker::Event(e)) if matches!(**e, MgmtEvent::Client { kind: ClientEventKind::Established, .. }))));
        assert!(r
            .on_client_event(established(2, Ipv4Addr::new(10, 8, 0, 3)))
            .is_err());
        // iroutes without a hook granting them
        let mut ev = established(3, Ipv4Addr::new(10, 8, 0, 4));
        if let ClientEvent::Established { iroutes, .. } = &mut ev {
            iroutes.push((Ipv4Addr::new(192, 168, 1, 0), 24));
        }
        assert!(r.on_client_event(ev).is_err());
    }

    #[test]
    fn auth_requests_follow_the_rules() {
        let req = ClientAuthRequest {
            cid: 5,
            kid: 1,
            reauth: false,
            common_name: "c".into(),
            username: Some("u".into()),
            password: Some("p".into()),
            real_address: addr(),
            peer_info: vec!["IV_VER=2.6.14".into()],
            cert_env: vec![],
        };
        let mut off = Router::new(cfg(false), 1);
        assert!(off.on_auth_request(req.clone()).is_err());
        let mut r = Router::new(cfg(true), 1);
        let fx = r.on_auth_request(req.clone()).unwrap();
        assert_eq!(fx.auth.len(), 1);
        assert!(r.on_auth_request(req.clone()).is_err(), "duplicate");
        let o = ClientOverrides {
            ifconfig_push: Some((Ipv4Addr::new(10, 99, 0, 5), Ipv4Addr::new(255, 255, 255, 0))),
            ..Default::default()
        };
        let fx = r.auth_decided(5, 1, AuthVerdict::Accept(Box::new(o)), false);
        assert_eq!(fx.out.len(), 1);
        // a granted static address outside the pool is fine for that client
        assert!(r
            .on_client_event(established(5, Ipv4Addr::new(10, 99, 0, 5)))
            .is_ok());
        // a re-auth of an unknown client is a violation
        let mut re = req;
        re.cid = 77;
        re.reauth = true;
        assert!(r.on_auth_request(re).is_err());
        let req9 = ClientAuthRequest {
            cid: 9,
            kid: 0,
            reauth: false,
            common_name: "x".into(),
            username: Some("u".into()),
            password: Some("pw".into()),
            real_address: addr(),
            peer_info: vec!["IV_VER=2.6.14".into(), "IV_PLAT=linux".into()],
            cert_env: vec![],
        };
        r.on_auth_request(req9.clone()).unwrap();
        let env = r.connect_env(&req9);
        assert_eq!(env.vars[0].0, "password");
        assert_eq!(env.vars.last().unwrap().0, "dev", "daemon variables last");
        // the password leaves the environment with the verdict
        r.auth_decided(9, 0, AuthVerdict::Accept(Box::default()), false);
        assert!(!r
            .connect_env(&req9)
            .vars
            .iter()
            .any(|(k, _)| k == "password"));
        let plat = env.vars.iter().position(|(k, _)| k == "IV_PLAT").unwrap();
        let ver = env.vars.iter().position(|(k, _)| k == "IV_VER").unwrap();
        assert!(plat < ver, "peer info reversed");
    }
}
