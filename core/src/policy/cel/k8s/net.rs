//! Kubernetes' IP and CIDR libraries (`library/ip.go`, `library/cidr.go`): the `net.IP` and
//! `net.CIDR` types, `ip(s)`, `isIP(s)`, `ip.isCanonical(s)`, `cidr(s)`, `isCIDR(s)`, their
//! methods and their conversions to strings.
//!
//! Addresses are parsed as Go's `netip.ParseAddr` parses them: dotted-decimal IPv4 with no
//! leading zeros, and IPv6 with an optional embedded IPv4 tail. On top of that, Kubernetes
//! rejects an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`), which would otherwise stand for an
//! IPv4 address in an IPv6 range and slip past a check of either, and an IPv6 zone
//! (`fe80::1%eth0`). Prefixes are parsed as `netip.ParsePrefix` parses them.

use super::{arg, opaque_val, take_args};
use cel::common::types::{CelBool, CelInt, CelString, Kind, STRING_TYPE, Type};
use cel::common::value::CowVal;
use cel::{DeclarationError, Env, ExecutionError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The type of IP addresses, as Kubernetes names it.
pub(super) static IP_TYPE: Type = Type::simple_type(Kind::Opaque, "net.IP");
/// The type of CIDR prefixes, as Kubernetes names it.
pub(super) static CIDR_TYPE: Type = Type::simple_type(Kind::Opaque, "net.CIDR");

/// An IP address, IPv4 or IPv6, with no zone and not IPv4-mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ip(IpAddr);
opaque_val!(Ip, IP_TYPE);

/// A CIDR prefix: an address, not necessarily masked, and a prefix length that fits its
/// family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Cidr {
    addr: IpAddr,
    bits: u8,
}
opaque_val!(Cidr, CIDR_TYPE);

/// Declares the IP and CIDR libraries on `env`.
pub(super) fn extension(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_type(IP_TYPE.to_owned())?;
    env.add_type(CIDR_TYPE.to_owned())?;

    cel::add_overload!(env, fn ip: (CelString) -> Result<Ip>, id = "string_to_ip")?;
    cel::add_overload!(env, fn is_ip: (CelString) -> CelBool, name = "isIP", id = "is_ip")?;
    cel::add_overload!(env, fn ip_is_canonical: (CelString) -> Result<CelBool>,
        name = "ip.isCanonical", id = "ip_is_canonical")?;
    cel::add_overload!(env, fn ip_to_string: (Ip) -> CelString, name = "string", id = "ip_to_string")?;
    cel::add_member_overload!(env, fn family: (Ip) -> CelInt, id = "ip_family")?;
    cel::add_member_overload!(env, fn is_unspecified: (Ip) -> CelBool, id = "ip_is_unspecified")?;
    cel::add_member_overload!(env, fn is_loopback: (Ip) -> CelBool, id = "ip_is_loopback")?;
    cel::add_member_overload!(env, fn is_link_local_multicast: (Ip) -> CelBool,
        id = "ip_is_link_local_multicast")?;
    cel::add_member_overload!(env, fn is_link_local_unicast: (Ip) -> CelBool,
        id = "ip_is_link_local_unicast")?;
    cel::add_member_overload!(env, fn is_global_unicast: (Ip) -> CelBool,
        id = "ip_is_global_unicast")?;

    cel::add_overload!(env, fn cidr: (CelString) -> Result<Cidr>, id = "string_to_cidr")?;
    cel::add_overload!(env, fn is_cidr: (CelString) -> CelBool, name = "isCIDR", id = "is_cidr")?;
    cel::add_overload!(env, fn cidr_to_string: (Cidr) -> CelString, name = "string",
        id = "cidr_to_string")?;
    cel::add_member_overload!(env, fn contains_ip: (Cidr, Ip) -> CelBool,
        name = "containsIP", id = "cidr_contains_ip_ip")?;
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip_string",
        CIDR_TYPE.to_owned(),
        vec![STRING_TYPE],
        contains_ip_string,
    )?;
    cel::add_member_overload!(env, fn contains_cidr: (Cidr, Cidr) -> CelBool,
        name = "containsCIDR", id = "cidr_contains_cidr")?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr_string",
        CIDR_TYPE.to_owned(),
        vec![STRING_TYPE],
        contains_cidr_string,
    )?;
    cel::add_member_overload!(env, fn cidr_ip: (Cidr) -> Ip, name = "ip", id = "cidr_ip")?;
    cel::add_member_overload!(env, fn masked: (Cidr) -> Cidr, id = "cidr_masked")?;
    cel::add_member_overload!(env, fn prefix_length: (Cidr) -> CelInt, id = "cidr_prefix_length")?;
    Ok(())
}

/// Parses an address as `netip.ParseAddr` does, returning why not as Go words it, less the
/// exact reason for a malformed address, which Go details more.
fn parse_go_addr(s: &str) -> Result<(IpAddr, Option<&str>), String> {
    let parse_error = |reason: &str| format!("ParseAddr({s:?}): {reason}");
    if s.is_empty() {
        return Err(parse_error("unable to parse IP"));
    }
    if s.contains(':') {
        let (addr, zone) = match s.split_once('%') {
            Some((addr, zone)) => {
                if zone.is_empty() {
                    return Err(parse_error("zone must be a non-empty string"));
                }
                (addr, Some(zone))
            }
            None => (s, None),
        };
        return addr
            .parse::<Ipv6Addr>()
            .map(|a| (IpAddr::V6(a), zone))
            .map_err(|_| parse_error("invalid IPv6 address"));
    }
    // `Ipv4Addr`'s parser, like Go's, takes exactly four decimal fields of at most 255 with
    // no leading zeros.
    s.parse::<Ipv4Addr>()
        .map(|a| (IpAddr::V4(a), None))
        .map_err(|_| parse_error("invalid IPv4 address"))
}

/// Whether `addr` is an IPv4-mapped IPv6 address, `::ffff:a.b.c.d`.
fn is_4_in_6(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// Parses an address as Kubernetes' `ip()` does, with its error messages.
fn parse_ip(raw: &str) -> Result<IpAddr, String> {
    let (addr, zone) = parse_go_addr(raw).map_err(|e| {
        format!("IP Address {raw:?} parse error during conversion from string: {e}")
    })?;
    if zone.is_some() {
        return Err(format!("IP address {raw:?} with zone value is not allowed"));
    }
    if is_4_in_6(&addr) {
        return Err(format!("IPv4-mapped IPv6 address {raw:?} is not allowed"));
    }
    Ok(addr)
}

/// Parses a prefix as `netip.ParsePrefix`, then Kubernetes' `cidr()`, do.
fn parse_cidr(raw: &str) -> Result<Cidr, String> {
    let prefix_error = |msg: &str| {
        format!(
            "network address parse error during conversion from string: netip.ParsePrefix({raw:?}): {msg}"
        )
    };
    let Some((addr, bits)) = raw.rsplit_once('/') else {
        return Err(prefix_error("no '/'"));
    };
    let (addr, zone) = parse_go_addr(addr).map_err(|e| prefix_error(&e))?;
    if zone.is_some() {
        return Err(prefix_error("IPv6 zones cannot be present in a prefix"));
    }
    // Go's `strconv.Atoi` takes a sign and leading zeros, which `ParsePrefix` rules out.
    let bad_bits = || prefix_error(&format!("bad bits after slash: {bits:?}"));
    if bits.len() > 1 && !bits.starts_with(|c: char| ('1'..='9').contains(&c)) {
        return Err(bad_bits());
    }
    if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_bits());
    }
    // What `strconv.Atoi` can't hold is bad bits too.
    let bits: i64 = bits.parse().map_err(|_| bad_bits())?;
    let max_bits = if addr.is_ipv4() { 32 } else { 128 };
    if bits > max_bits {
        return Err(prefix_error("prefix length out of range"));
    }
    if is_4_in_6(&addr) {
        return Err(format!("IPv4-mapped IPv6 address {raw:?} is not allowed"));
    }
    let bits = u8::try_from(bits).map_err(|_| prefix_error("prefix length out of range"))?;
    Ok(Cidr { addr, bits })
}

/// The error a conversion from string fails with.
fn conversion_error(function: &str, message: String) -> ExecutionError {
    ExecutionError::function_error(function, message)
}

fn ip(s: &CelString<'_>) -> Result<Ip, ExecutionError> {
    parse_ip(s.inner())
        .map(Ip)
        .map_err(|e| conversion_error("ip", e))
}

fn is_ip(s: &CelString<'_>) -> CelBool {
    parse_ip(s.inner()).is_ok().into()
}

/// Whether `s` is an address written as Go writes it back: lower case, zeros compressed as
/// RFC 5952 has it. Rust writes addresses that way too, and the ones Go would write
/// otherwise, IPv4-mapped ones, are rejected before.
fn ip_is_canonical(s: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let addr = parse_ip(s.inner()).map_err(|e| conversion_error("ip.isCanonical", e))?;
    Ok((addr.to_string() == s.inner()).into())
}

fn ip_to_string(ip: &Ip) -> CelString<'static> {
    ip.0.to_string().into()
}

fn family(ip: &Ip) -> CelInt {
    match ip.0 {
        IpAddr::V4(_) => 4.into(),
        IpAddr::V6(_) => 6.into(),
    }
}

fn is_unspecified(ip: &Ip) -> CelBool {
    ip.0.is_unspecified().into()
}

fn is_loopback(ip: &Ip) -> CelBool {
    ip.0.is_loopback().into()
}

/// 224.0.0.0/24 or ff02::/16, as Go has it.
fn is_link_local_multicast(ip: &Ip) -> CelBool {
    match ip.0 {
        IpAddr::V4(v4) => matches!(v4.octets(), [224, 0, 0, _]),
        IpAddr::V6(v6) => v6.segments()[0] == 0xff02,
    }
    .into()
}

/// 169.254.0.0/16 or fe80::/10, as Go has it.
fn link_local_unicast(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => matches!(v4.octets(), [169, 254, _, _]),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn is_link_local_unicast(ip: &Ip) -> CelBool {
    link_local_unicast(&ip.0).into()
}

/// Go's `IsGlobalUnicast`: anything but the unspecified address, the IPv4 broadcast
/// address, loopback, multicast and link-local unicast. Private and unique-local addresses
/// count as global unicast, as in Go.
fn is_global_unicast(ip: &Ip) -> CelBool {
    let multicast = match ip.0 {
        IpAddr::V4(v4) => v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    };
    let broadcast = ip.0 == IpAddr::V4(Ipv4Addr::BROADCAST);
    (!ip.0.is_unspecified()
        && !broadcast
        && !ip.0.is_loopback()
        && !multicast
        && !link_local_unicast(&ip.0))
    .into()
}

fn cidr(s: &CelString<'_>) -> Result<Cidr, ExecutionError> {
    parse_cidr(s.inner()).map_err(|e| {
        conversion_error(
            "cidr",
            format!("network address parse error during conversion from string: {e}"),
        )
    })
}

fn is_cidr(s: &CelString<'_>) -> CelBool {
    parse_cidr(s.inner()).is_ok().into()
}

fn cidr_to_string(cidr: &Cidr) -> CelString<'static> {
    format!("{}/{}", cidr.addr, cidr.bits).into()
}

/// `addr` with all but its first `bits` bits cleared.
fn mask(addr: IpAddr, bits: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

/// Whether `addr` is in the prefix: of the same family, with the same first bits.
fn prefix_contains(cidr: &Cidr, addr: IpAddr) -> bool {
    addr.is_ipv4() == cidr.addr.is_ipv4() && mask(addr, cidr.bits) == mask(cidr.addr, cidr.bits)
}

fn contains_ip(cidr: &Cidr, ip: &Ip) -> CelBool {
    prefix_contains(cidr, ip.0).into()
}

/// `containsIP` with the address written as a string, which must be one `ip()` takes.
fn contains_ip_string<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [this, other] = take_args(args)?;
    let cidr = arg::<Cidr>("containsIP", this.as_ref())?;
    let addr = ip(arg::<CelString>("containsIP", other.as_ref())?)?;
    Ok(CowVal::owned(contains_ip(cidr, &addr)))
}

/// Whether `other` is within `cidr`: as long a prefix or longer, and the same first
/// `cidr.bits` bits. That is Kubernetes 1.33's fixed `containsCIDR`; before it, the other
/// prefix's address had to equal the masked address of `cidr` (kubernetes#130450).
fn contains_cidr(cidr: &Cidr, other: &Cidr) -> CelBool {
    (cidr.bits <= other.bits && prefix_contains(cidr, other.addr)).into()
}

/// `containsCIDR` with the prefix written as a string, which must be one `cidr()` takes.
fn contains_cidr_string<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [this, other] = take_args(args)?;
    let this_cidr = arg::<Cidr>("containsCIDR", this.as_ref())?;
    let other = cidr(arg::<CelString>("containsCIDR", other.as_ref())?)?;
    Ok(CowVal::owned(contains_cidr(this_cidr, &other)))
}

/// The address of the prefix, as written: not masked.
fn cidr_ip(cidr: &Cidr) -> Ip {
    Ip(cidr.addr)
}

fn masked(cidr: &Cidr) -> Cidr {
    Cidr {
        addr: mask(cidr.addr, cidr.bits),
        bits: cidr.bits,
    }
}

fn prefix_length(cidr: &Cidr) -> CelInt {
    i64::from(cidr.bits).into()
}
