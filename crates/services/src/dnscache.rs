//! The server's own cache of parsed DNS answers for SPF, DKIM, DMARC, MX and PTR
//! (`mail-auth` takes caches; without them it asks and parses again for every message).
//!
//! Bounded (entries per record type), TTL-respecting, with a floor so that answers with a
//! TTL of 0 are still shared by the messages of a burst, and a ceiling so that a record
//! changed by its owner is seen within the hour. "Not found" answers are not cached here
//! (mail-auth only offers caches for answers): the resolver keeps them, with a floor for
//! answers that carry no SOA and so no negative TTL ([`resolver_options`]).

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::config::ResolverOpts;
use mail_auth::{MX, Parameters, RecordSet, ResolverCache, Txt};

/// Entries kept per record type.
const MAX_ENTRIES: u64 = 50_000;
/// The shortest time an answer is kept, whatever its TTL.
pub const MIN_TTL: Duration = Duration::from_secs(10);
/// The longest time an answer is kept, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long "no such record" is kept when the answer carries no SOA to say (RFC 2308
/// wants the SOA minimum; some resolvers, this machine's among them, send none).
pub const NEGATIVE_TTL_FLOOR: Duration = Duration::from_secs(30);

/// Resolver options every lookup of the server shares: a cache large enough for a busy
/// MX, negative answers kept even without an SOA, and timeouts short enough that a lost
/// UDP answer costs seconds, not the whole message budget.
pub fn resolver_options(mut opts: ResolverOpts) -> ResolverOpts {
    opts.cache_size = 10_000;
    opts.negative_min_ttl = Some(NEGATIVE_TTL_FLOOR);
    opts.negative_max_ttl = Some(MAX_TTL);
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts
}

/// One record type's cache.
pub struct TtlCache<K, V> {
    inner: moka::sync::Cache<K, (V, Instant)>,
}

struct UntilValid;

impl<K, V> moka::Expiry<K, (V, Instant)> for UntilValid {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &(V, Instant),
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.1.saturating_duration_since(created_at))
    }
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new() -> Self {
        TtlCache {
            inner: moka::sync::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(UntilValid)
                .build(),
        }
    }

    /// Entries held now (approximate: moka counts lazily).
    pub fn len(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, V> ResolverCache<K, V> for TtlCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, valid_until) = self.inner.get(name)?;
        (valid_until > Instant::now()).then_some(value)
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let now = Instant::now();
        let valid_until = valid_until.clamp(now + MIN_TTL, now + MAX_TTL);
        self.inner.insert(key, (value, valid_until));
    }
}

/// The caches of every record type mail-auth asks for.
pub struct DnsCaches {
    pub txt: TtlCache<Box<str>, Txt>,
    pub mx: TtlCache<Box<str>, RecordSet<MX>>,
    pub ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    pub ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    pub ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
}

/// mail-auth's parameters with every cache attached.
pub type Cached<'x, P> = Parameters<
    'x,
    P,
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
>;

impl DnsCaches {
    pub fn new() -> DnsCaches {
        DnsCaches {
            txt: TtlCache::new(),
            mx: TtlCache::new(),
            ipv4: TtlCache::new(),
            ipv6: TtlCache::new(),
            ptr: TtlCache::new(),
        }
    }

    /// `params` with every cache attached.
    pub fn with<'x, P>(&'x self, params: P) -> Cached<'x, P> {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }
}

impl Default for DnsCaches {
    fn default() -> Self {
        DnsCaches::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_between_the_floor_and_the_ceiling() {
        let c: TtlCache<Box<str>, u32> = TtlCache::new();
        // A TTL of 0 is kept for the floor.
        c.insert("zero.".into(), 1, Instant::now());
        assert_eq!(c.get("zero."), Some(1));
        // An answer valid for a day is kept at most for the ceiling.
        c.insert(
            "long.".into(),
            2,
            Instant::now() + Duration::from_secs(86_400),
        );
        let (_, until) = c.inner.get("long.").expect("kept");
        assert!(until <= Instant::now() + MAX_TTL);
        assert_eq!(c.remove("long."), Some(2));
        assert_eq!(c.get("long."), None);
    }
}
