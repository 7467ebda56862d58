//! The one HTTP client for URLs that come from outside (customers' media
//! links, URL and Google Drive knowledge sources, handover adapters' URLs
//! from the spec): http and https only; every address a name
//! resolves to, and every IP literal, checked against loopback, private,
//! link-local (cloud metadata), CGNAT and other special ranges unless an
//! operator setting allows the range; redirects followed by hand, each hop
//! checked again, at most [`MAX_REDIRECTS`]; bodies read chunk by chunk up to
//! a byte cap; connect and total timeouts.
//!
//! Written here rather than taken from crates.io: the guard is a resolver
//! hook of reqwest (the client every other call uses) plus a range list, and
//! the crates that offer it wrap other HTTP clients.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

pub const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("only http and https URLs are fetched ({0})")]
    Scheme(String),
    #[error("not a valid URL")]
    Invalid,
    #[error("{host} is {addr}, a {kind} address: not fetched")]
    Refused {
        host: String,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("the body is over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("{0}")]
    Transport(String),
}

impl FetchError {
    /// Refused by the guard (not a network failure): worth recording.
    pub fn refused(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::Scheme(_))
    }
}

/// What kind of special address `ip` is, if any.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local (metadata)")
            } else if a == 100 && (64..128).contains(&b) {
                Some("carrier-grade NAT")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if v4.is_broadcast() || v4.is_multicast() || a >= 240 {
                Some("broadcast, multicast or reserved")
            } else if v4.is_documentation() || (a == 198 && (18..20).contains(&b)) {
                Some("documentation or benchmarking")
            } else if a == 192 && b == 0 && v4.octets()[2] == 0 {
                Some("IETF protocol assignment")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            // An IPv4 address inside IPv6 (mapped, or NAT64) is judged as itself.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [_, _, _, _, _, _, hi, lo] = segments;
                let v4 = std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
                return special(IpAddr::V4(v4)).or(Some("NAT64"));
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if segments[0] & 0xfe00 == 0xfc00 {
                Some("unique local (private)")
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else {
                None
            }
        }
    }
}

/// Which addresses may be fetched: every public one, and special ones only
/// inside an allowed range (`TRUFFLES_FETCH_ALLOW_CIDRS`).
#[derive(Clone, Debug, Default)]
pub struct Guard {
    pub allow: Vec<IpNet>,
}

impl Guard {
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), FetchError> {
        match special(ip) {
            Some(kind) if !self.allow.iter().any(|net| net.contains(&ip)) => {
                Err(FetchError::Refused {
                    host: host.to_owned(),
                    addr: ip,
                    kind,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Resolves names with the system resolver and keeps only allowed addresses.
struct GuardedResolver(Guard);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match guard.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refusal = Some(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let error =
                    refusal.unwrap_or(FetchError::Transport(format!("{host} does not resolve")));
                return Err(Box::new(error) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A fetched body.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// The guarded client.
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    guard: Guard,
}

impl Fetcher {
    pub fn new(guard: Guard) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .build()?;
        Ok(Self { http, guard })
    }

    /// The URL's scheme, and its host when it is an IP literal (names are
    /// checked by the resolver when connecting).
    fn check_url(&self, url: &reqwest::Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Scheme(url.scheme().to_owned()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(FetchError::Invalid),
        };
        self.guard.check(&ip.to_string(), ip)
    }

    /// A request to a URL a spec configures (a handover adapter's, a Drive
    /// API's): the same checks, no redirects followed (a 3xx is the caller's
    /// error), timeouts set by the caller.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, FetchError> {
        let url = reqwest::Url::parse(url).map_err(|_| FetchError::Invalid)?;
        self.check_url(&url)?;
        Ok(self.http.request(method, url))
    }

    /// GET `url`, following redirects, with at most `max_bytes` of body,
    /// all within `timeout`.
    pub async fn get(
        &self,
        url: &str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Fetched, FetchError> {
        tokio::time::timeout(timeout, self.get_inner(url, max_bytes))
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }

    async fn get_inner(&self, url: &str, max_bytes: usize) -> Result<Fetched, FetchError> {
        let mut url = reqwest::Url::parse(url).map_err(|_| FetchError::Invalid)?;
        for _ in 0..=MAX_REDIRECTS {
            self.check_url(&url)?;
            let mut response = self.http.get(url.clone()).send().await.map_err(transport)?;
            if response.status().is_redirection() {
                let next = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or(FetchError::Invalid)?;
                url = next;
                continue;
            }
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status()));
            }
            if response
                .content_length()
                .is_some_and(|n| n > max_bytes as u64)
            {
                return Err(FetchError::TooLarge { limit: max_bytes });
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if bytes.len() + chunk.len() > max_bytes {
                    return Err(FetchError::TooLarge { limit: max_bytes });
                }
                bytes.extend_from_slice(&chunk);
            }
            return Ok(Fetched {
                bytes,
                content_type,
            });
        }
        Err(FetchError::TooManyRedirects)
    }
}

/// A transport error, with the guard's refusal when that is what it was
/// (the resolver's error travels inside reqwest's), and never the URL.
pub fn transport(e: reqwest::Error) -> FetchError {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(FetchError::Refused { host, addr, kind }) = s.downcast_ref::<FetchError>() {
            return FetchError::Refused {
                host: host.clone(),
                addr: *addr,
                kind,
            };
        }
        source = s.source();
    }
    FetchError::Transport(e.without_url().to_string())
}

/// `TRUFFLES_FETCH_ALLOW_CIDRS`: comma-separated ranges.
pub fn parse_allow(text: &str) -> anyhow::Result<Vec<IpNet>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .map_err(|_| anyhow::anyhow!("{s:?} is not a CIDR range"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_named_and_public_ones_pass() {
        for (ip, kind) in [
            ("169.254.169.254", "link-local (metadata)"),
            ("10.0.0.1", "private"),
            ("127.0.0.1", "loopback"),
            ("100.64.1.1", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fd00::1", "unique local (private)"),
            ("::ffff:10.1.2.3", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local (metadata)"),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(special(ip), Some(kind), "{ip}");
        }
        for ip in ["93.184.216.34", "2a00:1450:4001::200e", "8.8.8.8"] {
            assert_eq!(special(ip.parse().expect("ip")), None, "{ip}");
        }
    }

    #[test]
    fn an_allowed_range_opens_only_itself() {
        let guard = Guard {
            allow: parse_allow("127.0.0.0/8").expect("range"),
        };
        assert!(guard.check("x", "127.0.0.1".parse().expect("ip")).is_ok());
        assert!(guard.check("x", "10.0.0.1".parse().expect("ip")).is_err());
        assert!(parse_allow("localhost").is_err());
    }
}
