//! The client's address, for the sign-in limits and the journal: the TCP peer, unless the peer
//! is a proxy we trust (`serve --trusted-proxy CIDR`). Only then is `X-Forwarded-For` (or, when
//! the request has none, `Forwarded`) believed, and of its addresses the right-most one that is
//! not itself a trusted proxy: everything left of it was written by the client and can be forged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use ipnet::IpNet;

/// The networks of the proxies in front of the server; empty when none is trusted.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Arc<Vec<IpNet>>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&canonical(ip)))
    }
}

/// An IPv4 client reaching a dual-stack socket shows as `::ffff:a.b.c.d`; one address, one form.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The one place that decides who the client is (see the module comment).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.trusts(peer) {
        return peer;
    }
    // Hops in the order they were added, the peer last; walk back from the peer over trusted
    // proxies. A hop we cannot read stops the walk at the proxy that reported it.
    let mut closest = peer;
    for hop in forwarded_chain(headers).iter().rev() {
        match hop {
            Some(ip) if trusted.trusts(*ip) => closest = *ip,
            Some(ip) => return *ip,
            None => return closest,
        }
    }
    closest
}

/// The addresses a request was forwarded for, left (first) to right (last proxy's peer); `None`
/// for an entry that is no address (`unknown`, an obfuscated name, garbage).
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().map(|v| v.to_str().map(str::to_string).unwrap_or_default()).collect()
    };
    let xff = values("x-forwarded-for");
    if !xff.is_empty() {
        return xff.iter().flat_map(|v| v.split(',')).map(parse_node).collect();
    }
    values("forwarded")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|element| {
            // `for=…` among the element's `;`-separated pairs; an element without one is unreadable.
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v))
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`, optionally quoted.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(|r| r.parse().ok()).map(canonical)
}

/// The client's address as an extractor, for every handler that needs it.
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "no peer address"));
        };
        let trusted = parts.extensions.get::<TrustedProxies>().cloned().unwrap_or_default();
        Ok(ClientAddr(client_address(peer.ip(), &parts.headers, &trusted)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(Arc::new(nets.iter().map(|n| n.parse().unwrap()).collect()))
    }

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = with(&[("x-forwarded-for", "203.0.113.5"), ("forwarded", "for=198.51.100.7")]);
        assert_eq!(client_address(ip("192.0.2.9"), &h, &TrustedProxies::default()), ip("192.0.2.9"));
        assert_eq!(client_address(ip("192.0.2.9"), &h, &trusted(&["10.0.0.0/8"])), ip("192.0.2.9"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let t = trusted(&["127.0.0.1/32", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        assert_eq!(client_address(peer, &with(&[("x-forwarded-for", "203.0.113.5")]), &t), ip("203.0.113.5"));
        // What the client wrote itself is left of what the proxies added.
        let h = with(&[("x-forwarded-for", "1.2.3.4, 203.0.113.5, 10.1.2.3")]);
        assert_eq!(client_address(peer, &h, &t), ip("203.0.113.5"));
        // Several header lines are one list, in order.
        let h = with(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "203.0.113.5:4711")]);
        assert_eq!(client_address(peer, &h, &t), ip("203.0.113.5"));
        // No header: the proxy itself.
        assert_eq!(client_address(peer, &HeaderMap::new(), &t), peer);
        // Only trusted hops: the left-most of them.
        assert_eq!(client_address(peer, &with(&[("x-forwarded-for", "10.9.9.9")]), &t), ip("10.9.9.9"));
        // An unreadable hop next to a proxy: that proxy, never an address the client chose.
        let h = with(&[("x-forwarded-for", "198.51.100.7, unknown")]);
        assert_eq!(client_address(peer, &h, &t), peer);
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let t = trusted(&["::1/128", "127.0.0.1/32"]);
        let h = with(&[("forwarded", "for=1.2.3.4, for=\"[2001:db8:cafe::17]:4711\";proto=https;by=127.0.0.1")]);
        assert_eq!(client_address(ip("::1"), &h, &t), ip("2001:db8:cafe::17"));
        let h = with(&[("forwarded", "for=198.51.100.7"), ("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(client_address(ip("127.0.0.1"), &h, &t), ip("203.0.113.5"));
        // IPv4-mapped IPv6 peers count as their IPv4 address.
        let h = with(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(client_address(ip("::ffff:127.0.0.1"), &h, &t), ip("203.0.113.5"));
    }
}
