//! Sets of addresses, for `ipBlock`s. IPv4 and IPv6 are kept apart, as Kubernetes reads a block
//! by how its CIDR is written (`::/0` is no IPv4 address), with one exception: a block inside the
//! IPv4-mapped prefix `::ffff:0:0/96`, inside NAT64's well-known prefix `64:ff9b::/96`, or inside
//! the deprecated IPv4-compatible `::/96`, is IPv4 written as IPv6. The API server accepts such blocks and a CNI may unmap them, so they are
//! judged as the IPv4 addresses they carry: `::ffff:0:0/96` is all of IPv4 and
//! `::ffff:169.254.169.254/128` is the metadata address.
//!
//! [`Cidr::parse`] reads a CIDR as the API server does; an [`IpSet`] is a set of addresses of
//! both [`Family`]s, with the set operations the model needs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const V4_MAX: u128 = u32::MAX as u128;
const MAPPED: u128 = 0xffff << 32;
const NAT64: u128 = 0x0064_ff9b << 96;

/// The IPv4 ranges that are not the public internet (RFC 6890's special-purpose blocks that are
/// not globally reachable): "this network", RFC 1918, shared address space, loopback,
/// link-local, IETF protocol assignments, documentation, benchmarking, multicast and reserved.
const NON_PUBLIC_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
];

/// The IPv6 internet: global unicast, `2000::/3`.
const PUBLIC_V6: (u128, u128) = (0x2000 << 112, (0x4000 << 112) - 1);

/// An address family. Addresses of one are never addresses of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4, including IPv6 blocks that carry IPv4 (mapped, NAT64, IPv4-compatible).
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// `IPv4` or `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A CIDR as the API server reads it (Go's `net.ParseCIDR`: the address masked to the prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The family it is judged in (mapped and NAT64 IPv6 blocks are IPv4).
    pub family: Family,
    /// The first address, as a number (IPv4 in the low 32 bits).
    pub first: u128,
    /// The last address, as a number.
    pub last: u128,
}

impl Cidr {
    /// Reads `a.b.c.d/n` or an IPv6 CIDR. Leading zeros in IPv4 octets are refused: Go reads them
    /// differently from some CNIs, so the written range would not be what is enforced.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = |why: &str| {
            format!("{text:?} is not a CIDR ({why}); write it as 203.0.113.0/24 or 2001:db8::/32")
        };
        let (ip, prefix) = text.split_once('/').ok_or_else(|| bad("no /prefix"))?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the prefix is not a number"));
        }
        let prefix: u32 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        let addr: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
        let (addr, bits, family) = match addr {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32, Family::V4),
            IpAddr::V6(v6) => (u128::from(v6), 128, Family::V6),
        };
        if prefix > bits {
            return Err(bad(&format!("the prefix is longer than {bits}")));
        }
        let host = if prefix == bits {
            0
        } else if bits == 32 {
            V4_MAX >> prefix
        } else {
            u128::MAX >> prefix
        };
        let first = addr & !host;
        let last = first | host;
        if family == Family::V6 {
            // IPv4-compatible (`::a.b.c.d`, deprecated), IPv4-mapped and NAT64's well-known prefix.
            for base in [0, MAPPED, NAT64] {
                if first >> 32 == base >> 32 && last >> 32 == base >> 32 {
                    return Ok(Cidr {
                        family: Family::V4,
                        first: first & V4_MAX,
                        last: last & V4_MAX,
                    });
                }
            }
        }
        Ok(Cidr {
            family,
            first,
            last,
        })
    }
}

/// A set of addresses: sorted, disjoint, non-touching ranges per family.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpSet {
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// No address.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every address of both families.
    pub fn everything() -> Self {
        Self {
            v4: vec![(0, V4_MAX)],
            v6: vec![(0, u128::MAX)],
        }
    }

    /// The addresses of one CIDR.
    pub fn of(cidr: Cidr) -> Self {
        let mut set = Self::default();
        set.ranges_mut(cidr.family).push((cidr.first, cidr.last));
        set
    }

    /// What an `ipBlock` reaches: its CIDR without its `except`s. An except must lie inside the
    /// CIDR, in the same family, as the API server requires.
    pub fn block(cidr: &str, except: &[String]) -> Result<Self, String> {
        let c = Cidr::parse(cidr)?;
        let mut set = Self::of(c);
        for e in except {
            let x = Cidr::parse(e)?;
            // An IPv4 block with an except written as IPv6 (`::ffff:169.254.169.254/128`), or
            // the other way round: a CNI that does not unmap would not except anything.
            if e.contains(':') != cidr.contains(':') {
                return Err(format!(
                    "except {e:?} is not written in the same family as the cidr {cidr:?}: write both as IPv4 (or both as IPv6), as the CNI matches them"
                ));
            }
            if x.family != c.family || x.first < c.first || x.last > c.last {
                return Err(format!(
                    "except {e:?} is not inside the cidr {cidr:?}: each except must be a range within the block"
                ));
            }
            set = set.minus(&Self::of(x));
        }
        Ok(set)
    }

    /// The union of many sets at once (one sort, not one merge per set).
    pub fn union_all(sets: &[&IpSet]) -> Self {
        let mut all = Self::empty();
        for s in sets {
            all.v4.extend_from_slice(&s.v4);
            all.v6.extend_from_slice(&s.v6);
        }
        all.union(&Self::empty())
    }

    pub(crate) fn ranges(&self, family: Family) -> &[(u128, u128)] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn ranges_mut(&mut self, family: Family) -> &mut Vec<(u128, u128)> {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The addresses in either set.
    pub fn union(&self, other: &Self) -> Self {
        let join = |a: &[(u128, u128)], b: &[(u128, u128)]| {
            let mut all: Vec<(u128, u128)> = a.iter().chain(b).copied().collect();
            all.sort_unstable();
            let mut out: Vec<(u128, u128)> = Vec::with_capacity(all.len());
            for (x, y) in all {
                match out.last_mut() {
                    Some(last) if x <= last.1.saturating_add(1) => last.1 = last.1.max(y),
                    _ => out.push((x, y)),
                }
            }
            out
        };
        Self {
            v4: join(&self.v4, &other.v4),
            v6: join(&self.v6, &other.v6),
        }
    }

    /// The addresses of `self` that are not in `other`.
    pub fn minus(&self, other: &Self) -> Self {
        let cut = |a: &[(u128, u128)], b: &[(u128, u128)]| {
            let mut out = Vec::new();
            for &(x, y) in a {
                let mut from = Some(x);
                for &(p, q) in b {
                    let Some(f) = from else { break };
                    if q < f || p > y {
                        continue;
                    }
                    if p > f {
                        out.push((f, p - 1));
                    }
                    from = (q < y).then(|| q + 1);
                }
                if let Some(f) = from {
                    out.push((f, y));
                }
            }
            out
        };
        Self {
            v4: cut(&self.v4, &other.v4),
            v6: cut(&self.v6, &other.v6),
        }
    }

    /// The addresses in both sets.
    pub fn intersect(&self, other: &Self) -> Self {
        self.minus(&self.minus(other))
    }

    /// Whether every address of `other` is in `self`.
    pub fn contains(&self, other: &Self) -> bool {
        other.minus(self).is_empty()
    }

    /// Whether `addr` is in the set; an IPv4 address written as IPv6 counts as IPv4 (see
    /// [`addr_key`]).
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        let (family, a) = addr_key(addr);
        self.ranges(family).iter().any(|&(x, y)| x <= a && a <= y)
    }

    /// Whether the sets share an address.
    pub fn intersects(&self, other: &Self) -> bool {
        !self.intersect(other).is_empty()
    }

    /// The public internet of both families.
    pub fn public() -> &'static Self {
        static PUBLIC: std::sync::OnceLock<IpSet> = std::sync::OnceLock::new();
        PUBLIC.get_or_init(Self::make_public)
    }

    fn make_public() -> Self {
        let mut private = Self::empty();
        for c in NON_PUBLIC_V4 {
            if let Ok(c) = Cidr::parse(c) {
                private = private.union(&Self::of(c));
            }
        }
        let mut public = Self {
            v4: vec![(0, V4_MAX)],
            v6: vec![PUBLIC_V6],
        };
        public = public.minus(&private);
        public
    }

    /// The share of the public internet of each family this set reaches: exactly 1.0 when it
    /// reaches all of it, below 1.0 otherwise.
    pub fn public_share(&self) -> (f64, f64) {
        let public = Self::public();
        let reached = self.intersect(public);
        let share = |family: Family| {
            let size = |s: &IpSet| -> f64 {
                s.ranges(family)
                    .iter()
                    .map(|&(a, b)| (b - a) as f64 + 1.0)
                    .sum()
            };
            let all = size(public);
            let got = reached.ranges(family);
            if got == public.ranges(family) {
                1.0
            } else {
                (size(&reached) / all).min(1.0 - f64::EPSILON)
            }
        };
        (share(Family::V4), share(Family::V6))
    }

    /// The smallest list of CIDRs that spells this set, IPv4 first.
    pub fn cidrs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            for &(a, b) in self.ranges(family) {
                for (first, prefix) in blocks(a, b, family) {
                    out.push(format_cidr(family, first, prefix));
                }
            }
        }
        out
    }

    /// The ranges of a family, as `(first, last)` addresses.
    pub fn ranges_of(&self, family: Family) -> impl Iterator<Item = (IpAddr, IpAddr)> + '_ {
        self.ranges(family)
            .iter()
            .map(move |&(a, b)| (to_addr(family, a), to_addr(family, b)))
    }

    /// Every boundary inside this set's ranges, for splitting peers into pieces that rules treat
    /// alike: the first address of each range and the one after its last.
    pub fn cuts(&self, out: &mut Vec<(Family, u128)>) {
        for family in [Family::V4, Family::V6] {
            for &(a, b) in self.ranges(family) {
                out.push((family, a));
                if let Some(n) = b.checked_add(1)
                    && (family == Family::V6 || n <= V4_MAX)
                {
                    out.push((family, n));
                }
            }
        }
    }

    /// One range, from `first` to `last` in a family.
    pub fn range(family: Family, first: u128, last: u128) -> Self {
        let mut set = Self::empty();
        set.ranges_mut(family).push((first, last));
        set
    }

    /// The last address of a family, as a number.
    pub fn max_of(family: Family) -> u128 {
        match family {
            Family::V4 => V4_MAX,
            Family::V6 => u128::MAX,
        }
    }
}

impl fmt::Display for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cidrs = self.cidrs();
        if cidrs.is_empty() {
            return f.write_str("no address");
        }
        f.write_str(&cidrs.join(", "))
    }
}

/// An address as the model keys it: mapped and NAT64 IPv6 addresses are IPv4.
pub fn addr_key(addr: IpAddr) -> (Family, u128) {
    match addr {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let a = u128::from(v6);
            if a >> 32 == 0 || a >> 32 == MAPPED >> 32 || a >> 32 == NAT64 >> 32 {
                (Family::V4, a & V4_MAX)
            } else {
                (Family::V6, a)
            }
        }
    }
}

fn to_addr(family: Family, a: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from((a & V4_MAX) as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(a)),
    }
}

fn format_cidr(family: Family, first: u128, prefix: u32) -> String {
    format!("{}/{prefix}", to_addr(family, first))
}

/// The CIDR blocks that exactly cover `a..=b`, as (first address, prefix).
fn blocks(mut a: u128, b: u128, family: Family) -> Vec<(u128, u32)> {
    let bits: u32 = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let mut out = Vec::new();
    loop {
        // The largest block starting at `a` that is aligned and ends by `b`.
        let mut size_bits = if a == 0 {
            bits
        } else {
            a.trailing_zeros().min(bits)
        };
        loop {
            let last = if size_bits >= 128 {
                u128::MAX
            } else {
                a + ((1u128 << size_bits) - 1)
            };
            if last <= b {
                out.push((a, bits - size_bits));
                if last == b || last == u128::MAX {
                    return out;
                }
                a = last + 1;
                break;
            }
            size_bits -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cidr: &str, except: &[&str]) -> IpSet {
        let except: Vec<String> = except.iter().map(|s| (*s).to_owned()).collect();
        IpSet::block(cidr, &except).unwrap()
    }

    #[test]
    fn a_cidr_is_masked_as_go_reads_it() {
        assert_eq!(set("10.1.2.3/8", &[]).cidrs(), ["10.0.0.0/8"]);
        assert_eq!(set("2001:db8::1/32", &[]).cidrs(), ["2001:db8::/32"]);
    }

    #[test]
    fn ipv4_mapped_and_nat64_blocks_are_ipv4() {
        assert_eq!(set("::ffff:0:0/96", &[]).cidrs(), ["0.0.0.0/0"]);
        assert_eq!(
            set("::ffff:169.254.169.254/128", &[]).cidrs(),
            ["169.254.169.254/32"]
        );
        assert_eq!(
            set("64:ff9b::a9fe:a9fe/128", &[]).cidrs(),
            ["169.254.169.254/32"]
        );
        // A larger IPv6 block that merely contains the mapped prefix stays IPv6, as written.
        assert!(set("::/0", &[]).cidrs() == ["::/0"]);
        assert!(
            !set("::/0", &[]).contains_addr("169.254.169.254".parse().unwrap()),
            "::/0 reaches no IPv4 address"
        );
    }

    #[test]
    fn except_must_be_inside_the_block() {
        assert!(IpSet::block("10.0.0.0/8", &["11.0.0.0/8".into()]).is_err());
        assert!(IpSet::block("10.0.0.0/8", &["fd00::/8".into()]).is_err());
        assert!(IpSet::block("0.0.0.0/0", &["010.0.0.0/8".into()]).is_err());
        // The API server accepts an IPv4 block with a mapped except; a CNI may not unmap it.
        let e = IpSet::block("0.0.0.0/0", &["::ffff:169.254.169.254/128".into()]).unwrap_err();
        assert!(e.contains("same family"), "{e}");
        assert!(IpSet::block("::ffff:0:0/96", &["169.254.169.254/32".into()]).is_err());
    }

    #[test]
    fn a_block_without_its_excepts_is_the_smallest_cidr_list() {
        let s = set("0.0.0.0/0", &["169.254.169.254/32"]);
        assert_eq!(s.cidrs().len(), 32);
        assert!(!s.contains_addr("169.254.169.254".parse().unwrap()));
        assert!(s.contains_addr("169.254.169.253".parse().unwrap()));
        assert!(s.contains_addr("::ffff:8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn public_share_counts_the_internet_not_the_address_space() {
        let (v4, v6) = set("0.0.0.0/0", &[]).public_share();
        assert_eq!((v4, v6), (1.0, 0.0));
        let (_, v6) = set("2000::/3", &[]).public_share();
        assert_eq!(v6, 1.0, "2000::/3 is the IPv6 internet");
        let (_, v6) = set("2000::/4", &[]).public_share();
        assert!((v6 - 0.5).abs() < 1e-9);
        let (v4, _) = set("10.0.0.0/8", &[]).public_share();
        assert_eq!(v4, 0.0, "RFC 1918 is not the internet");
        let halves = set("0.0.0.0/1", &[]).union(&set("128.0.0.0/1", &[]));
        assert_eq!(halves.public_share().0, 1.0);
        let (v4, _) = set("0.0.0.0/0", &["8.8.8.8/32"]).public_share();
        assert!(v4 < 1.0 && v4 > 0.999);
    }

    #[test]
    fn sets_combine() {
        let a = set("10.0.0.0/9", &[]);
        let b = set("10.128.0.0/9", &[]);
        assert_eq!(a.union(&b).cidrs(), ["10.0.0.0/8"]);
        assert_eq!(a.union(&b).minus(&a).cidrs(), ["10.128.0.0/9"]);
        assert!(a.union(&b).contains(&a));
        assert!(!a.intersects(&b));
        assert_eq!(IpSet::everything().cidrs(), ["0.0.0.0/0", "::/0"]);
    }
}
