//! Edge dedup on Redis: `SET key processing:<token> NX PX lease`, then compare-and-set to
//! `done:<token>:<content digest>:<delivery id>` (what was produced, `tally_domain::edge::Produced`) with the
//! retry-window TTL, or compare-and-delete on failure. The token makes confirm and release safe against a claim that
//! expired and was taken over meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tally_domain::edge::{ClaimState, Produced};
use tokio::sync::Mutex;

use crate::{RedisConfig, RedisError};

const CONFIRM: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0"#;

/// Moves a done claim to an earlier statement of the same content, only ever to an earlier time: the stored value
/// must be done, name this content (ARGV[1] = `:<content>:`) and end in a time later than ARGV[4] (claims written
/// before times were kept end in a delivery id, and are never moved), whatever its token.
const RESTATE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 5) ~= 'done:' or not string.find(v, ARGV[1], 1, true) then
  return 0
end
local at = tonumber(string.match(v, ':(%-?%d+)$'))
if at and at > tonumber(ARGV[4]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0"#;

#[derive(Clone)]
pub struct RedisDedup {
    config: RedisConfig,
    state: Arc<Mutex<Conn>>,
    confirm: Arc<Script>,
    restate: Arc<Script>,
    release: Arc<Script>,
}

enum Conn {
    Up(ConnectionManager),
    Down { retry_at: Instant },
}

fn key(fact_key: &str) -> String {
    format!("tally:edge:{fact_key}")
}

impl RedisDedup {
    /// Never fails: an unreachable Redis is retried lazily, after `retry_after_ms`.
    pub fn new(config: RedisConfig) -> Self {
        RedisDedup {
            config,
            state: Arc::new(Mutex::new(Conn::Down { retry_at: Instant::now() })),
            confirm: Arc::new(Script::new(CONFIRM)),
            restate: Arc::new(Script::new(RESTATE)),
            release: Arc::new(Script::new(RELEASE)),
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, RedisError> {
        if self.config.url.is_empty() {
            return Err(RedisError::NotConfigured);
        }
        let mut state = self.state.lock().await;
        match &*state {
            Conn::Up(c) => return Ok(c.clone()),
            Conn::Down { retry_at } if Instant::now() < *retry_at => {
                return Err(RedisError::Backoff(retry_at.duration_since(Instant::now()).as_millis() as u64))
            }
            Conn::Down { .. } => {}
        }
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1);
        let connect = async {
            let client = redis::Client::open(self.config.url.as_str())?;
            ConnectionManager::new_with_config(client, manager_config).await
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(c)) => {
                *state = Conn::Up(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                *state = self.down();
                Err(e.into())
            }
            Err(_) => {
                *state = self.down();
                Err(RedisError::Backoff(self.config.retry_after_ms))
            }
        }
    }

    fn down(&self) -> Conn {
        Conn::Down { retry_at: Instant::now() + Duration::from_millis(self.config.retry_after_ms) }
    }

    /// Records a failure of an established connection so that the next calls go to the fallback at once.
    async fn failed<T>(&self, e: redis::RedisError) -> Result<T, RedisError> {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
            *self.state.lock().await = self.down();
        }
        Err(e.into())
    }

    pub async fn claim(&self, fact_key: &str, token: &str, lease: Duration) -> Result<ClaimState, RedisError> {
        let mut c = self.conn().await?;
        let k = key(fact_key);
        let processing = format!("processing:{token}");
        for _ in 0..2 {
            let set: Option<String> = match redis::cmd("SET")
                .arg(&k)
                .arg(&processing)
                .arg("NX")
                .arg("PX")
                .arg(lease.as_millis() as u64)
                .query_async(&mut c)
                .await
            {
                Ok(v) => v,
                Err(e) => return self.failed(e).await,
            };
            if set.is_some() {
                return Ok(ClaimState::Claimed);
            }
            let current: Option<String> = match redis::cmd("GET").arg(&k).query_async(&mut c).await {
                Ok(v) => v,
                Err(e) => return self.failed(e).await,
            };
            match current.as_deref() {
                Some(v) => {
                    return Ok(match Produced::parse_done(v) {
                        Some(produced) => ClaimState::Done(produced),
                        None => ClaimState::Processing,
                    })
                }
                // Expired between SET and GET: try once more.
                None => continue,
            }
        }
        Ok(ClaimState::Processing)
    }

    pub async fn confirm(
        &self,
        fact_key: &str,
        token: &str,
        produced: &Produced,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let mut c = self.conn().await?;
        let r: Result<i32, _> = self
            .confirm
            .key(key(fact_key))
            .arg(format!("processing:{token}"))
            .arg(produced.done_value(token))
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(n) => Ok(n == 1),
            Err(e) => self.failed(e).await,
        }
    }

    /// See `RESTATE`: false when the claim holds no later time of `was`'s content.
    pub async fn restate(
        &self,
        fact_key: &str,
        token: &str,
        was: &Produced,
        now: &Produced,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let mut c = self.conn().await?;
        let r: Result<i32, _> = self
            .restate
            .key(key(fact_key))
            .arg(format!(":{}:", was.content))
            .arg(now.done_value(token))
            .arg(ttl.as_millis() as u64)
            .arg(now.occurred_at.map_or(i64::MIN, |t| t.unix_micros()))
            .invoke_async(&mut c)
            .await;
        match r {
            Ok(n) => Ok(n == 1),
            Err(e) => self.failed(e).await,
        }
    }

    pub async fn release(&self, fact_key: &str, token: &str) -> Result<(), RedisError> {
        let mut c = self.conn().await?;
        let r: Result<i32, _> =
            self.release.key(key(fact_key)).arg(format!("processing:{token}")).invoke_async(&mut c).await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => self.failed(e).await,
        }
    }
}

impl RedisDedup {
    /// PING through the shared connection (or a fresh attempt when it is down and the back-off has passed).
    pub async fn ping(&self) -> Result<String, RedisError> {
        let mut c = self.conn().await?;
        match redis::cmd("PING").query_async::<String>(&mut c).await {
            Ok(pong) => Ok(pong),
            Err(e) => self.failed(e).await,
        }
    }
}
