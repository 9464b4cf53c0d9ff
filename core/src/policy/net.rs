//! `net.cidr_intersects` and `net.cidr_merge`, which Gatekeeper templates call and regorus (0.14)
//! lacks, registered as regorus extensions with OPA's semantics, quirks included:
//!
//! - Addresses live in one 128-bit space, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), as Go's
//!   `net` package keeps them; a network in that space with a prefix of 96 or more is an IPv4
//!   network and prints as one.
//! - `cidr_intersects` is false across families (Go's `IPNet.Contains` compares lengths).
//! - `cidr_merge` takes an array or a set of strings. A bare IPv4 address gets its classful
//!   default mask (`10.0.0.5` is `10.0.0.5/8`, kept unmasked when nothing merges with it); a bare
//!   IPv6 address is an error. Sorted ranges that overlap or touch are merged only where their
//!   union is exactly one CIDR block, until nothing changes; a network that merged with nothing
//!   is returned as written.
//!
//! Invalid input makes the call undefined, as OPA's non-strict builtin errors do.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use regorus::Value;

const MAPPED: u128 = 0xffff << 32;

/// A network in the 128-bit space, with the address as written (not masked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: u128,
    prefix: u32,
}

impl Net {
    fn mask(prefix: u32) -> u128 {
        if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        }
    }

    fn first(&self) -> u128 {
        self.addr & Self::mask(self.prefix)
    }

    fn last(&self) -> u128 {
        self.first() | !Self::mask(self.prefix)
    }

    /// An IPv4 network, as Go reads a network whose address is IPv4-mapped and whose mask
    /// covers the mapping prefix.
    fn is_v4(&self) -> bool {
        self.prefix >= 96 && self.addr >> 32 == 0xffff
    }

    /// The single CIDR block that is exactly `first..=last`, if there is one.
    fn block(first: u128, last: u128) -> Option<Net> {
        let size = last.wrapping_sub(first).wrapping_add(1);
        let prefix = if size == 0 {
            0 // the whole space
        } else if size.is_power_of_two() {
            128 - size.trailing_zeros()
        } else {
            return None;
        };
        (first & !Self::mask(prefix) == 0).then_some(Net {
            addr: first,
            prefix,
        })
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_v4() {
            let v4 = Ipv4Addr::from((self.addr & 0xffff_ffff) as u32);
            write!(f, "{v4}/{}", self.prefix - 96)
        } else {
            write!(f, "{}/{}", Ipv6Addr::from(self.addr), self.prefix)
        }
    }
}

/// `a.b.c.d/n` or an IPv6 CIDR, as Go's `net.ParseCIDR` reads it (the address masked).
fn parse_cidr(s: &str) -> Option<Net> {
    let (ip, prefix) = s.split_once('/')?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return None;
    }
    let prefix: u32 = prefix.parse().ok()?;
    let net = match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if !ip.contains(':') => {
            if prefix > 32 {
                return None;
            }
            Net {
                addr: MAPPED | u128::from(u32::from(v4)),
                prefix: prefix + 96,
            }
        }
        IpAddr::V4(_) => return None,
        IpAddr::V6(v6) => {
            if prefix > 128 {
                return None;
            }
            Net {
                addr: u128::from(v6),
                prefix,
            }
        }
    };
    Some(Net {
        addr: net.first(),
        ..net
    })
}

/// An element of `cidr_merge`: a CIDR, or a bare IPv4 address with its default mask.
fn parse_merge_element(s: &str) -> Option<Net> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let prefix = match v4.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                192..=223 => 24,
                _ => return None, // Go has no default mask for class D and E
            };
            Some(Net {
                addr: MAPPED | u128::from(u32::from(v4)),
                prefix: prefix + 96,
            })
        }
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => parse_merge_element(&v4.to_string()),
            None => None, // "IPv6 invalid: needs prefix length"
        },
        Err(_) => parse_cidr(s),
    }
}

fn string_arg(v: &Value) -> Option<&str> {
    v.as_string().ok().map(|s| s.as_ref())
}

/// `net.cidr_intersects(cidr1, cidr2)`.
pub(crate) fn cidr_intersects(args: Vec<Value>) -> anyhow::Result<Value> {
    let (Some(a), Some(b)) = (
        args.first().and_then(string_arg).and_then(parse_cidr),
        args.get(1).and_then(string_arg).and_then(parse_cidr),
    ) else {
        return Ok(Value::Undefined);
    };
    if a.is_v4() != b.is_v4() {
        return Ok(Value::from(false));
    }
    Ok(Value::from(a.first() <= b.last() && b.first() <= a.last()))
}

/// `net.cidr_merge(addrs)`.
pub(crate) fn cidr_merge(args: Vec<Value>) -> anyhow::Result<Value> {
    let Some(input) = args.first() else {
        return Ok(Value::Undefined);
    };
    let items: Vec<&Value> = if let Ok(a) = input.as_array() {
        a.iter().collect()
    } else if let Ok(s) = input.as_set() {
        s.iter().collect()
    } else {
        return Ok(Value::Undefined);
    };
    let mut nets = Vec::with_capacity(items.len());
    for item in items {
        match string_arg(item).and_then(parse_merge_element) {
            Some(n) => nets.push(n),
            None => return Ok(Value::Undefined),
        }
    }
    let merged: BTreeSet<Value> = merge(nets)
        .into_iter()
        .map(|n| Value::from(n.to_string()))
        .collect();
    Ok(Value::from(merged))
}

/// `palisade.ip_coverage(blocks)`: the share of the IPv4 and of the IPv6 address space that
/// NetworkPolicy `ipBlock`s (`{"cidr": …, "except": […]}`) reach together, as
/// `{"ipv4": share, "ipv6": share}`, each exactly 1 when every address of the family is reached
/// (`0.0.0.0/0`, `0.0.0.0/1` with `128.0.0.0/1`, …) and below 1 otherwise. A family is read from
/// how the CIDR is written, as Kubernetes does: `::/0` reaches no IPv4 address. An `except`
/// outside its block is ignored (the API server refuses one). Not an OPA builtin: Gatekeeper
/// cannot run a template that calls it.
pub(crate) fn ip_coverage(args: Vec<Value>) -> anyhow::Result<Value> {
    let Some(blocks) = args.first().and_then(|v| v.as_array().ok()) else {
        return Ok(Value::Undefined);
    };
    // Per family: the reached ranges, in the family's own space (IPv4 as 0..2^32).
    let mut reached: [Vec<(u128, u128)>; 2] = [Vec::new(), Vec::new()];
    for block in blocks.iter() {
        let Some(cidr) = string_arg(&block[&Value::from("cidr")]) else {
            return Ok(Value::Undefined);
        };
        let Some(net) = parse_cidr(cidr) else {
            return Ok(Value::Undefined);
        };
        let v6 = cidr.contains(':');
        let local = |n: &Net| {
            if v6 {
                (n.first(), n.last())
            } else {
                (n.first() & 0xffff_ffff, n.last() & 0xffff_ffff)
            }
        };
        let (first, last) = local(&net);
        let mut holes: Vec<(u128, u128)> = Vec::new();
        if let Ok(excepts) = block[&Value::from("except")].as_array() {
            for e in excepts.iter() {
                let Some(text) = string_arg(e) else {
                    return Ok(Value::Undefined);
                };
                let Some(hole) = parse_cidr(text) else {
                    return Ok(Value::Undefined);
                };
                let (a, b) = local(&hole);
                if text.contains(':') == v6 && first <= a && b <= last {
                    holes.push((a, b));
                }
            }
        }
        // The block minus its holes; `from` is the first address not yet placed.
        let ranges = &mut reached[usize::from(v6)];
        let mut from = Some(first);
        for (a, b) in union(holes) {
            let Some(f) = from else { break };
            if a > f {
                ranges.push((f, a - 1));
            }
            from = (b < last).then(|| b + 1);
        }
        if let Some(f) = from {
            ranges.push((f, last));
        }
    }
    let share = |ranges: &[(u128, u128)], bits: u32| -> f64 {
        let merged = union(ranges.to_vec());
        let max = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        if merged == [(0, max)] {
            return 1.0;
        }
        let count: u128 = merged.iter().map(|(a, b)| b - a + 1).sum();
        let share = count as f64 / 2f64.powi(bits as i32);
        share.min(1.0 - f64::EPSILON)
    };
    let mut out = std::collections::BTreeMap::new();
    out.insert(Value::from("ipv4"), Value::from(share(&reached[0], 32)));
    out.insert(Value::from("ipv6"), Value::from(share(&reached[1], 128)));
    Ok(Value::from(out))
}

/// Sorted, disjoint ranges covering what `ranges` cover (touching ranges joined).
fn union(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn merge(mut nets: Vec<Net>) -> Vec<Net> {
    loop {
        nets.sort_by_key(|n| (n.first(), n.last()));
        let before = nets.len();
        let mut i = nets.len();
        while i > 1 {
            i -= 1;
            let (prev, cur) = (nets[i - 1], nets[i]);
            if cur.first().saturating_sub(1) <= prev.last() {
                let first = prev.first().min(cur.first());
                let last = prev.last().max(cur.last());
                if let Some(block) = Net::block(first, last) {
                    nets[i - 1] = block;
                    nets.remove(i);
                }
            }
        }
        if nets.len() == before {
            return nets;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge_strs(items: &[&str]) -> Value {
        let arr = Value::from(items.iter().map(|s| Value::from(*s)).collect::<Vec<_>>());
        cidr_merge(vec![arr]).unwrap()
    }

    fn set(items: &[&str]) -> Value {
        Value::from(
            items
                .iter()
                .map(|s| Value::from(*s))
                .collect::<BTreeSet<_>>(),
        )
    }

    fn intersects(a: &str, b: &str) -> Value {
        cidr_intersects(vec![Value::from(a), Value::from(b)]).unwrap()
    }

    // Each expectation below is what OPA v1.20 answers for the same call.
    #[test]
    fn cidr_intersects_as_opa() {
        assert_eq!(intersects("10.0.0.0/8", "10.1.0.0/16"), Value::from(true));
        assert_eq!(intersects("10.0.0.0/16", "10.1.0.0/16"), Value::from(false));
        assert_eq!(intersects("10.0.0.0/8", "fd00::/8"), Value::from(false));
        assert_eq!(intersects("fd00::/8", "fd00:1::/32"), Value::from(true));
        assert_eq!(intersects("10.1.2.3/8", "10.200.0.0/16"), Value::from(true));
        assert_eq!(
            intersects("0.0.0.0/0", "255.255.255.255/32"),
            Value::from(true)
        );
        assert_eq!(
            intersects("10.0.0.0/8", "::ffff:10.0.0.0/104"),
            Value::from(true)
        );
        assert_eq!(intersects("10.0.0.0/8", "::/0"), Value::from(false));
        // OPA errors on these; non-strict builtin errors are undefined
        assert_eq!(intersects("10.0.0.1", "10.0.0.0/8"), Value::Undefined);
        assert_eq!(intersects("bad", "10.0.0.0/8"), Value::Undefined);
        assert_eq!(intersects("10.0.0.0/33", "10.0.0.0/8"), Value::Undefined);
    }

    #[test]
    fn cidr_merge_as_opa() {
        assert_eq!(
            merge_strs(&["10.0.0.0/24", "10.0.1.0/24"]),
            set(&["10.0.0.0/23"])
        );
        assert_eq!(
            merge_strs(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.5"]),
            set(&["10.0.0.0/8"])
        );
        assert_eq!(merge_strs(&["10.0.0.5"]), set(&["10.0.0.5/8"]));
        assert_eq!(
            merge_strs(&["10.0.0.5", "192.168.0.0/16"]),
            set(&["10.0.0.5/8", "192.168.0.0/16"])
        );
        assert_eq!(
            merge_strs(&["192.168.1.7", "192.168.1.8"]),
            set(&["192.168.1.0/24"])
        );
        assert_eq!(
            merge_strs(&["172.16.5.4", "1.1.1.1/32"]),
            set(&["1.1.1.1/32", "172.16.5.4/16"])
        );
        assert_eq!(
            merge_strs(&["10.0.0.0/24", "10.0.2.0/24"]),
            set(&["10.0.0.0/24", "10.0.2.0/24"])
        );
        assert_eq!(
            merge_strs(&["fd00::/64", "fd00:0:0:1::/64"]),
            set(&["fd00::/63"])
        );
        assert_eq!(
            merge_strs(&["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "::/0"]),
            set(&["::/0"])
        );
        assert_eq!(merge_strs(&["10.1.2.3/8"]), set(&["10.0.0.0/8"]));
        assert_eq!(
            merge_strs(&["10.1.2.3/8", "11.0.0.0/8"]),
            set(&["10.0.0.0/7"])
        );
        assert_eq!(
            merge_strs(&["1.1.1.1/32", "1.1.1.2/32"]),
            set(&["1.1.1.1/32", "1.1.1.2/32"])
        );
        assert_eq!(
            merge_strs(&["1.1.1.0/32", "1.1.1.1/32", "1.1.1.2/31"]),
            set(&["1.1.1.0/30"])
        );
        assert_eq!(
            merge_strs(&["0.0.0.0/1", "128.0.0.0/1"]),
            set(&["0.0.0.0/0"])
        );
        assert_eq!(merge_strs(&["::ffff:0:0/96"]), set(&["0.0.0.0/0"]));
        assert_eq!(merge_strs(&["::ffff:10.0.0.0/104"]), set(&["10.0.0.0/8"]));
        assert_eq!(merge_strs(&[]), set(&[]));
        assert_eq!(merge_strs(&["bad"]), Value::Undefined);
        assert_eq!(merge_strs(&["10.0.0.0/33"]), Value::Undefined);
        assert_eq!(merge_strs(&["fd00::1"]), Value::Undefined);
        let from_set = cidr_merge(vec![set(&["10.0.0.0/24", "10.0.1.0/24"])]).unwrap();
        assert_eq!(from_set, set(&["10.0.0.0/23"]));
        assert_eq!(
            cidr_merge(vec![Value::from("10.0.0.0/8")]).unwrap(),
            Value::Undefined
        );
    }
}

#[cfg(test)]
mod coverage_tests {
    use super::*;

    fn coverage(blocks: serde_json::Value) -> (f64, f64) {
        let out = ip_coverage(vec![Value::from(blocks)]).unwrap();
        let get = |k: &str| out[&Value::from(k)].as_f64().unwrap();
        (get("ipv4"), get("ipv6"))
    }

    #[test]
    fn every_spelling_of_all_addresses_is_exactly_one() {
        use serde_json::json;
        assert_eq!(coverage(json!([{"cidr": "0.0.0.0/0"}])), (1.0, 0.0));
        assert_eq!(coverage(json!([{"cidr": "::/0"}])), (0.0, 1.0));
        assert_eq!(
            coverage(json!([{"cidr": "0.0.0.0/1"}, {"cidr": "128.0.0.0/1"}])),
            (1.0, 0.0)
        );
        // A hole filled by another block.
        assert_eq!(
            coverage(
                json!([{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}, {"cidr": "10.0.0.0/8"}])
            ),
            (1.0, 0.0)
        );
        assert_eq!(
            coverage(json!([{"cidr": "::/1"}, {"cidr": "8000::/1"}, {"cidr": "10.0.0.0/8"}])),
            (1.0 / 256.0, 1.0)
        );
    }

    #[test]
    fn excepts_and_partial_ranges_are_below_one() {
        use serde_json::json;
        let (v4, v6) = coverage(json!([{"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}]));
        assert!(v4 < 1.0 && v4 > 0.999_999, "{v4}");
        assert_eq!(v6, 0.0);
        assert_eq!(coverage(json!([{"cidr": "0.0.0.0/1"}])), (0.5, 0.0));
        assert_eq!(
            coverage(json!([{"cidr": "10.0.0.0/8"}, {"cidr": "10.1.0.0/16"}])),
            (1.0 / 256.0, 0.0)
        );
        let (_, v6) = coverage(json!([{"cidr": "::/0", "except": ["fd00:ec2::254/128"]}]));
        assert!(v6 < 1.0, "{v6}");
        // Overlapping holes; a hole at the block's end; an except outside the block is ignored.
        assert_eq!(
            coverage(
                json!([{"cidr": "0.0.0.0/0", "except": ["0.0.0.0/1", "0.0.0.0/2", "192.0.0.0/2", "10.0.0.0/8"]}])
            ),
            (0.25, 0.0)
        );
        assert_eq!(
            coverage(json!([{"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8", "::/0"]}])),
            (1.0 / 256.0, 0.0)
        );
        assert_eq!(coverage(json!([])), (0.0, 0.0));
    }

    #[test]
    fn a_malformed_block_is_undefined() {
        use serde_json::json;
        for bad in [
            json!([{"cidr": "10.0.0.0/33"}]),
            json!([{"cidr": 7}]),
            json!([{"except": ["10.0.0.0/8"]}]),
            json!([{"cidr": "10.0.0.0/8", "except": ["nonsense"]}]),
        ] {
            let out = ip_coverage(vec![Value::from(bad.clone())]).unwrap();
            assert_eq!(out, Value::Undefined, "{bad}");
        }
        assert_eq!(
            ip_coverage(vec![Value::from("x")]).unwrap(),
            Value::Undefined
        );
    }
}
