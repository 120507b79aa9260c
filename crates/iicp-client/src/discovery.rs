//! Talking to the directory: discover (cached as long as its `Cache-Control` allows) and
//! ticketed route dispatch. With tickets on, the client discovers with `view=public` (no
//! routes), chooses, and asks a ticket for the chosen node's route; a directory that ignores the
//! view and sends routes anyway is used as is. With tickets off, the route-bearing dispatch view
//! is used.

use crate::error::ClientError;
use crate::select::Candidate;
use crate::transport::{Request, Response, Transport};
use iicp_proto::control::CxPublicKey;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a discover answer is reused when the directory does not say.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5);
/// A ticketed route is reused at most this long, whatever the ticket says.
const MAX_ROUTE_AGE: Duration = Duration::from_secs(300);
/// A ticketed route is dropped this long before its ticket expires.
const ROUTE_MARGIN_S: u64 = 5;
/// How long a discover answer may stand in for the directory while the directory is down
/// (unreachable or answering 5xx). Nodes keep serving through a directory outage, and the
/// client's breakers weed out the ones that died meanwhile.
pub(crate) const STALE_IF_ERROR: Duration = Duration::from_secs(300);

/// One discover answer.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub candidates: Vec<Candidate>,
}

/// A node's route, from a ticket or the dispatch view.
#[derive(Debug, Clone)]
pub struct Route {
    pub node_id: String,
    pub endpoint: String,
    pub cx_public_key: Option<CxPublicKey>,
}

type Cache<V> = Mutex<HashMap<String, (Instant, V)>>;

pub struct Directory {
    base: String,
    transport: Arc<dyn Transport>,
    use_tickets: bool,
    /// Unix time (s) at `anchor`. Wall-clock time moves on with tokio's clock from there, so
    /// ticket expiry follows paused time in tests.
    unix_at_anchor: u64,
    anchor: Instant,
    cache: Cache<Arc<Snapshot>>,
    /// Every storable discover answer, kept for [`STALE_IF_ERROR`] past its arrival.
    last_good: Cache<Arc<Snapshot>>,
    routes: Cache<Route>,
    /// Every ticketed route, kept for [`STALE_IF_ERROR`]: nodes do not require the ticket, so
    /// a route learnt before an outage still reaches its node.
    last_routes: Cache<Route>,
}

/// How long an answer may be reused, from its `Cache-Control`: not at all with `no-store` or
/// `no-cache`, `max-age` seconds when given, [`DEFAULT_MAX_AGE`] when the header says neither.
fn freshness(cache_control: Option<&str>) -> Duration {
    let Some(value) = cache_control else {
        return DEFAULT_MAX_AGE;
    };
    let mut max_age = None;
    for directive in value.split(',') {
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Duration::ZERO;
        }
        if name.eq_ignore_ascii_case("max-age") && max_age.is_none() {
            // An unreadable max-age means stale (RFC 9111 §4.2.1).
            max_age = Some(arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0));
        }
    }
    max_age.map(Duration::from_secs).unwrap_or(DEFAULT_MAX_AGE)
}

/// Keeps `value` under `key` for `ttl` (not at all when zero). Expired entries go at the same
/// time, so keys that are never asked for again (models named by callers) do not pile up.
fn remember<V>(cache: &Cache<V>, key: String, ttl: Duration, value: V) {
    let now = Instant::now();
    let mut cache = cache.lock();
    cache.retain(|_, (expires, _)| *expires > now);
    if !ttl.is_zero() {
        cache.insert(key, (now + ttl, value));
    }
}

/// The value under `key` while it is fresh.
fn recall<V: Clone>(cache: &Cache<V>, key: &str) -> Option<V> {
    let cache = cache.lock();
    let (expires, value) = cache.get(key)?;
    (Instant::now() < *expires).then(|| value.clone())
}

/// The directory could not answer at all (as opposed to answering that the request is wrong).
fn directory_down(e: &ClientError) -> bool {
    match e {
        ClientError::Directory(_) => true,
        ClientError::Node { status, .. } => *status >= 500,
        _ => false,
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn candidate(n: &Value) -> Option<Candidate> {
    let key = n
        .get("node_id")
        .or_else(|| n.get("node_id_prefix"))?
        .as_str()?
        .to_owned();
    let cx: Option<CxPublicKey> = n
        .get("cx_public_key")
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    Some(Candidate {
        key,
        endpoint: n.get("endpoint").and_then(Value::as_str).map(str::to_owned),
        score: n.get("score").and_then(Value::as_f64).unwrap_or(0.1),
        region: n.get("region").and_then(Value::as_str).map(str::to_owned),
        models: strings(n.get("models")),
        modalities: strings(n.get("input_modalities")),
        reputation: n
            .get("reputation_score")
            .and_then(Value::as_f64)
            .unwrap_or(0.5),
        key_ready: cx.is_some() || n.get("key_ready").and_then(Value::as_bool) == Some(true),
        cx_public_key: cx,
        latency_estimate_ms: n.get("latency_estimate_ms").and_then(Value::as_f64),
    })
}

impl Directory {
    pub fn new(base: &url::Url, transport: Arc<dyn Transport>, use_tickets: bool) -> Self {
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Directory {
            base: base.as_str().trim_end_matches('/').to_owned(),
            transport,
            use_tickets,
            unix_at_anchor: unix_now,
            anchor: Instant::now(),
            cache: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            last_good: Mutex::new(HashMap::new()),
            last_routes: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the Unix time of now (tests).
    #[cfg(test)]
    pub fn set_unix_now(&mut self, unix_s: u64) {
        self.unix_at_anchor = unix_s;
        self.anchor = Instant::now();
    }

    fn unix_now(&self) -> u64 {
        self.unix_at_anchor + self.anchor.elapsed().as_secs()
    }

    async fn send(&self, req: Request) -> Result<Response, ClientError> {
        self.transport
            .send(req)
            .await
            .map_err(|e| ClientError::Directory(e.to_string()))
    }

    /// The JSON body of an answer whose status `ok` accepts, or the error the answer carries.
    async fn expect_json(resp: Response, ok: fn(u16) -> bool) -> Result<Value, ClientError> {
        let status = resp.status;
        match resp.json().await {
            Ok(body) if ok(status) => Ok(body),
            Ok(body) => Err(ClientError::from_error_body(status, &body)),
            Err(_) if ok(status) => Err(ClientError::Directory(
                "the directory answered something that is not JSON".into(),
            )),
            Err(_) => Err(ClientError::from_error_body(status, &Value::Null)),
        }
    }

    /// Candidates for `intent` (best first, as the directory ordered them).
    pub async fn discover(
        &self,
        intent: &str,
        model: Option<&str>,
        modality: Option<&str>,
    ) -> Result<Arc<Snapshot>, ClientError> {
        // The cache key is built without the URL: a hit is the common case.
        let key = format!("{intent}\0{model:?}\0{modality:?}");
        if let Some(snap) = recall(&self.cache, &key) {
            return Ok(snap);
        }
        let view = if self.use_tickets {
            "public"
        } else {
            "dispatch"
        };
        let mut url = url::Url::parse(&format!("{}/api/v1/discover", self.base))
            .map_err(|e| ClientError::Directory(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("intent", intent)
                .append_pair("limit", "50")
                .append_pair("view", view);
            if let Some(m) = model {
                q.append_pair("model", m);
            }
            if let Some(m) = modality {
                q.append_pair("modality", m);
            }
        }
        match self.fetch_snapshot(url.as_str()).await {
            Ok((snapshot, age)) => {
                if !age.is_zero() {
                    remember(
                        &self.last_good,
                        key.clone(),
                        STALE_IF_ERROR,
                        snapshot.clone(),
                    );
                }
                remember(&self.cache, key, age, snapshot.clone());
                Ok(snapshot)
            }
            Err(e) if directory_down(&e) => match recall(&self.last_good, &key) {
                Some(stale) => {
                    tracing::debug!(error = %e, "directory down; using its last discover answer");
                    Ok(stale)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// One discover request: the snapshot and how long it may be reused.
    async fn fetch_snapshot(&self, url: &str) -> Result<(Arc<Snapshot>, Duration), ClientError> {
        let resp = self.send(Request::get(url)).await?;
        let age = freshness(resp.header("cache-control"));
        let body = Self::expect_json(resp, |s| (200..300).contains(&s)).await?;
        let nodes = body
            .get("nodes")
            .or_else(|| body.pointer("/data/nodes"))
            .and_then(Value::as_array)
            .ok_or_else(|| ClientError::Directory("discover answer without nodes".into()))?;
        let snapshot = Arc::new(Snapshot {
            candidates: nodes.iter().filter_map(candidate).collect(),
        });
        Ok((snapshot, age))
    }

    /// The route of a candidate: its own (dispatch view) or a ticket's.
    pub async fn route(&self, intent: &str, c: &Candidate) -> Result<Route, ClientError> {
        if let Some(endpoint) = &c.endpoint {
            return Ok(Route {
                node_id: c.key.clone(),
                endpoint: endpoint.clone(),
                cx_public_key: c.cx_public_key.clone(),
            });
        }
        let cache_key = format!("{intent} {}", c.key);
        if let Some(route) = recall(&self.routes, &cache_key) {
            return Ok(route);
        }
        let (route, ttl) = match self.fetch_route(intent, c).await {
            Ok(fetched) => fetched,
            Err(e) if directory_down(&e) => {
                return match recall(&self.last_routes, &cache_key) {
                    Some(route) => {
                        tracing::debug!(error = %e, "directory down; using the last route");
                        Ok(route)
                    }
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        remember(
            &self.last_routes,
            cache_key.clone(),
            STALE_IF_ERROR,
            route.clone(),
        );
        remember(&self.routes, cache_key, ttl, route.clone());
        Ok(route)
    }

    /// One dispatch-ticket request: the route and how long it may be reused.
    async fn fetch_route(
        &self,
        intent: &str,
        c: &Candidate,
    ) -> Result<(Route, Duration), ClientError> {
        let resp = self
            .send(Request::post_json(
                format!("{}/api/v1/dispatch/ticket", self.base),
                &json!({"intent": intent, "node_id_prefix": c.key}),
            ))
            .await?;
        let body = Self::expect_json(resp, |s| s == 201).await?;
        let r = &body["route"];
        let route = Route {
            node_id: r["node_id"].as_str().unwrap_or(&c.key).to_owned(),
            endpoint: r["endpoint"]
                .as_str()
                .ok_or_else(|| ClientError::Directory("ticket without a route".into()))?
                .to_owned(),
            cx_public_key: serde_json::from_value(r["cx_public_key"].clone()).ok(),
        };
        // Keep the route a little less long than the ticket lives (not at all when it is about
        // to expire), and never for long, whatever the two clocks say.
        let ttl = match body["expires_at"].as_u64() {
            Some(exp) => Duration::from_secs(exp.saturating_sub(self.unix_now() + ROUTE_MARGIN_S)),
            None => Duration::from_secs(30),
        };
        Ok((route, ttl.min(MAX_ROUTE_AGE)))
    }

    /// A consumer token for calling `target`, signed by the directory for `caller_token`'s node.
    pub async fn consumer_token(
        &self,
        caller_token: &str,
        target: &str,
        intent: &str,
    ) -> Result<String, ClientError> {
        let resp = self
            .send(
                Request::post_json(
                    format!("{}/api/v1/consumer-token", self.base),
                    &json!({"target_node_id": target, "intent": intent}),
                )
                .header("authorization", format!("Bearer {caller_token}")),
            )
            .await?;
        let body = Self::expect_json(resp, |s| s == 201).await?;
        body["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Directory("consumer-token answer without a token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, Net, Reply, DIRECTORY};

    const CHAT: &str = "urn:iicp:intent:llm:chat:v1";

    fn directory(net: &Net, use_tickets: bool) -> Directory {
        Directory::new(
            &DIRECTORY.parse().unwrap(),
            Arc::new(net.clone()),
            use_tickets,
        )
    }

    #[test]
    fn freshness_follows_cache_control() {
        assert_eq!(freshness(None), DEFAULT_MAX_AGE);
        assert_eq!(
            freshness(Some(
                "public, max-age=7, s-maxage=10, stale-while-revalidate=5"
            )),
            Duration::from_secs(7)
        );
        assert_eq!(freshness(Some("Max-Age=\"3\"")), Duration::from_secs(3));
        assert_eq!(freshness(Some("public")), DEFAULT_MAX_AGE);
        assert_eq!(freshness(Some("max-age=0")), Duration::ZERO);
        assert_eq!(freshness(Some("max-age=soon")), Duration::ZERO);
        assert_eq!(freshness(Some("no-store")), Duration::ZERO);
        assert_eq!(freshness(Some("max-age=60, no-store")), Duration::ZERO);
        assert_eq!(freshness(Some("no-cache, max-age=60")), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_discover_answer_is_reused_within_max_age_and_refetched_after() {
        let net = Net::new();
        net.discover(vec![node("a")], Some("public, max-age=5, s-maxage=10"));
        let dir = directory(&net, false);
        let first = dir.discover(CHAT, None, None).await.unwrap();
        assert_eq!(first.candidates[0].key, "a");
        assert_eq!(net.discovers(), 1);

        tokio::time::advance(Duration::from_millis(4_900)).await;
        let again = dir.discover(CHAT, None, None).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the cached snapshot itself");
        assert_eq!(net.discovers(), 1, "no request within max-age");
        assert_eq!(net.seen()[0].method, crate::transport::Method::Get);

        tokio::time::advance(Duration::from_millis(200)).await;
        dir.discover(CHAT, None, None).await.unwrap();
        assert_eq!(net.discovers(), 2, "refetched once max-age has passed");
        dir.discover(CHAT, None, None).await.unwrap();
        assert_eq!(net.discovers(), 2, "and cached again");
    }

    #[tokio::test(start_paused = true)]
    async fn no_store_and_max_age_zero_are_never_reused() {
        for cc in ["no-store", "max-age=0", "no-cache"] {
            let net = Net::new();
            net.discover(vec![node("a")], Some(cc));
            let dir = directory(&net, false);
            for n in 1..=3 {
                dir.discover(CHAT, None, None).await.unwrap();
                assert_eq!(net.discovers(), n, "{cc}: every call asks the directory");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_cache_control_an_answer_lives_five_seconds() {
        let net = Net::new();
        net.discover(vec![node("a")], None);
        let dir = directory(&net, false);
        dir.discover(CHAT, None, None).await.unwrap();
        tokio::time::advance(Duration::from_millis(4_900)).await;
        dir.discover(CHAT, None, None).await.unwrap();
        assert_eq!(net.discovers(), 1);
        tokio::time::advance(Duration::from_millis(200)).await;
        dir.discover(CHAT, None, None).await.unwrap();
        assert_eq!(net.discovers(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn each_query_is_cached_on_its_own_and_expired_entries_are_dropped() {
        let net = Net::new();
        net.discover(vec![node("a")], Some("max-age=5"));
        let dir = directory(&net, false);
        dir.discover(CHAT, Some("m1"), None).await.unwrap();
        dir.discover(CHAT, Some("m2"), None).await.unwrap();
        dir.discover(CHAT, Some("m1"), None).await.unwrap();
        assert_eq!(net.discovers(), 2, "one request per distinct query");
        assert_eq!(dir.cache.lock().len(), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        dir.discover(CHAT, Some("m3"), None).await.unwrap();
        assert_eq!(
            dir.cache.lock().len(),
            1,
            "m1 and m2 expired and were dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_answer_stands_in_while_the_directory_is_down_for_a_while() {
        let net = Net::new();
        let ok = Reply::Json {
            status: 200,
            headers: vec![("cache-control".into(), "public, max-age=5".into())],
            body: serde_json::json!({"nodes": [node("a")], "count": 1}),
        };
        net.script(
            &format!("{DIRECTORY}/api/v1/discover"),
            [
                ok,
                Reply::Refused,
                Reply::error(503, "temporarily_unavailable"),
            ],
            Reply::error(422, "validation_error"),
        );
        let dir = directory(&net, false);
        let first = dir.discover(CHAT, None, None).await.unwrap();

        tokio::time::advance(Duration::from_secs(6)).await;
        let refused = dir.discover(CHAT, None, None).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &refused),
            "unreachable: the last answer"
        );
        let unavailable = dir.discover(CHAT, None, None).await.unwrap();
        assert!(Arc::ptr_eq(&first, &unavailable), "5xx: the last answer");
        assert_eq!(
            net.discovers(),
            3,
            "each call still asks the directory first"
        );

        let e = dir.discover(CHAT, None, None).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::Node { status: 422, .. }),
            "a refusal is not an outage: {e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_answer_is_not_used_past_its_horizon_or_when_it_was_no_store() {
        let net = Net::new();
        let answer = |cc: &str| Reply::Json {
            status: 200,
            headers: vec![("cache-control".into(), cc.into())],
            body: serde_json::json!({"nodes": [node("a")], "count": 1}),
        };
        net.script(
            &format!("{DIRECTORY}/api/v1/discover"),
            [answer("max-age=5"), Reply::Refused, answer("no-store")],
            Reply::Refused,
        );
        let dir = directory(&net, false);
        dir.discover(CHAT, None, None).await.unwrap();
        tokio::time::advance(STALE_IF_ERROR + Duration::from_secs(1)).await;
        assert!(matches!(
            dir.discover(CHAT, None, None).await,
            Err(ClientError::Directory(_))
        ));
        dir.discover(CHAT, None, None).await.unwrap();
        assert!(
            matches!(
                dir.discover(CHAT, None, None).await,
                Err(ClientError::Directory(_))
            ),
            "a no-store answer is never kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_directory_error_is_passed_on_and_not_cached() {
        let net = Net::new();
        net.script(
            &format!("{DIRECTORY}/api/v1/discover"),
            [Reply::error(422, "validation_error")],
            Reply::Json {
                status: 200,
                headers: vec![],
                body: serde_json::json!({"nodes": [node("a")], "count": 1}),
            },
        );
        let dir = directory(&net, false);
        let e = dir.discover(CHAT, None, None).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::Node { status: 422, code, .. } if code == "validation_error"),
            "{e:?}"
        );
        assert_eq!(
            dir.discover(CHAT, None, None)
                .await
                .unwrap()
                .candidates
                .len(),
            1
        );
        assert_eq!(net.discovers(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_learnt_route_still_reaches_its_node_while_the_directory_is_down() {
        let net = Net::new();
        let tickets = format!("{DIRECTORY}/api/v1/dispatch/ticket");
        let ticket = Reply::Json {
            status: 201,
            headers: vec![],
            body: serde_json::json!({"expires_at": 1_060,
                "route": {"node_id": "abcd1234-full", "endpoint": "http://a.test"}}),
        };
        net.script(
            &tickets,
            [ticket, Reply::Refused, Reply::error(404, "not_found")],
            Reply::Refused,
        );
        let mut dir = directory(&net, true);
        dir.set_unix_now(1_000);
        let public = candidate(&serde_json::json!({"node_id_prefix": "abcd1234"})).unwrap();
        dir.route(CHAT, &public).await.unwrap();

        tokio::time::advance(Duration::from_secs(120)).await;
        let stale = dir.route(CHAT, &public).await.unwrap();
        assert_eq!(
            stale.endpoint, "http://a.test",
            "the ticket expired, the route stands in"
        );
        assert!(
            dir.route(CHAT, &public).await.is_err(),
            "a directory that answers 404 is not down"
        );
        tokio::time::advance(STALE_IF_ERROR).await;
        assert!(dir.route(CHAT, &public).await.is_err(), "past the horizon");
        assert_eq!(net.seen_at(&tickets).len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticketed_route_is_reused_until_shortly_before_its_ticket_expires() {
        let net = Net::new();
        let ticket = |expires_at: u64| Reply::Json {
            status: 201,
            headers: vec![],
            body: serde_json::json!({"expires_at": expires_at,
                "route": {"node_id": "abcd1234-full", "endpoint": "http://a.test"}}),
        };
        let tickets = format!("{DIRECTORY}/api/v1/dispatch/ticket");
        // Expires in 60 s: kept 55 s. Then one that expires within the margin: not kept.
        net.script(&tickets, [ticket(1_060)], ticket(1_061));
        let mut dir = directory(&net, true);
        dir.set_unix_now(1_000);
        let public = candidate(&serde_json::json!({"node_id_prefix": "abcd1234"})).unwrap();

        let route = dir.route(CHAT, &public).await.unwrap();
        assert_eq!(route.endpoint, "http://a.test");
        assert_eq!(route.node_id, "abcd1234-full");
        tokio::time::advance(Duration::from_secs(54)).await;
        dir.route(CHAT, &public).await.unwrap();
        assert_eq!(
            net.seen_at(&tickets).len(),
            1,
            "reused within the ticket's life"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        dir.route(CHAT, &public).await.unwrap();
        assert_eq!(net.seen_at(&tickets).len(), 2, "renewed before expiry");
        dir.route(CHAT, &public).await.unwrap();
        assert_eq!(
            net.seen_at(&tickets).len(),
            3,
            "a ticket about to expire is not reused"
        );
        assert_eq!(
            net.seen_at(&tickets)[0].method,
            crate::transport::Method::Post
        );
        let body = net.seen_at(&tickets)[0].body.clone().unwrap();
        assert_eq!(
            body,
            serde_json::json!({"intent": CHAT, "node_id_prefix": "abcd1234"})
        );
    }

    #[test]
    fn public_and_dispatch_nodes_become_candidates() {
        let public = json!({"node_id_prefix": "abcd1234", "score": 0.8, "models": ["m"],
            "input_modalities": ["text", "image"], "key_ready": true});
        let c = candidate(&public).unwrap();
        assert_eq!(c.key, "abcd1234");
        assert!(c.endpoint.is_none() && c.key_ready && c.cx_public_key.is_none());
        assert_eq!(c.modalities, vec!["text", "image"]);
        let dispatch = json!({"node_id": "n-1", "endpoint": "http://x", "score": 0.5});
        let c = candidate(&dispatch).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://x"));
        assert!(!c.key_ready);
    }
}
