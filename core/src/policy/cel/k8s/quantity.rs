//! Kubernetes' quantity library (`library/quantity.go`): the `kubernetes.Quantity` type,
//! `quantity(s)`, `isQuantity(s)` and its methods.
//!
//! Quantities are parsed as apimachinery's `resource.ParseQuantity` parses them: a signed
//! decimal number and a suffix, decimal SI (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`),
//! binary SI (`Ki` to `Ei`) or a decimal exponent (`e3`, `E-2`); values finer than a
//! nano-unit are rounded up, away from zero, to one; binary SI values are capped at the
//! largest `int64`. Arithmetic and comparisons are exact.
//!
//! `isInteger()` and `asInteger()` follow Go's `Quantity.AsInt64`, which depends on how the
//! quantity is held, not only on its value: Go holds a quantity as an `int64` and a decimal
//! scale when it parses one with at most 18 digits and no finer than a nano-unit, and keeps it
//! so through additions that don't overflow; `AsInt64` only converts such a quantity, and
//! only with a scale of zero or more. So `quantity("1000m").isInteger()` is false in
//! Kubernetes, and here, though the value is 1. [`Amount`] models the two forms.
//!
//! Go holds the other quantities as arbitrary-precision decimals; here they are an `i128`
//! of at most 38 digits and a decimal exponent, which holds any quantity with at most 38
//! significant digits. A quantity, or a sum, that needs more is an error here.

use super::opaque_val;
use cel::common::types::{CelBool, CelDouble, CelInt, CelString, Kind, Type};
use cel::{DeclarationError, Env, ExecutionError};
use std::cmp::Ordering;

/// The type of quantities, as Kubernetes names it.
pub(super) static QUANTITY_TYPE: Type = Type::simple_type(Kind::Opaque, "kubernetes.Quantity");

/// Why a string is not a quantity: apimachinery's `ErrFormatWrong`.
const FORMAT_WRONG: &str = "quantities must match the regular expression \
     '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// apimachinery's `ErrSuffix`.
const BAD_SUFFIX: &str = "unable to parse quantity's suffix";
/// apimachinery's `ErrNumeric`.
const BAD_NUMBER: &str = "unable to parse numeric part of quantity";

/// The most significant digits a quantity held as a [`Decimal`] may have here: any more and
/// aligning two of them could overflow an `i128`.
const MAX_DIGITS: u32 = 38;

/// The finest a parsed quantity gets: a nano-unit, 10^-9.
const NANO: i64 = -9;

/// A quantity of some resource: a number of cores, of bytes, of anything.
#[derive(Clone, Debug)]
pub(super) struct Quantity {
    amount: Amount,
}
opaque_val!(Quantity, QUANTITY_TYPE);

/// Quantities are equal when their values are, however written: `1` and `1000m`.
impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.decimal().cmp(&other.decimal()) == Ordering::Equal
    }
}

/// How Go holds a quantity, which decides whether `AsInt64` converts it.
#[derive(Clone, Copy, Debug)]
enum Amount {
    /// `value` × 10^`scale`, Go's `int64Amount`.
    Int64 { value: i64, scale: i32 },
    /// Go's `inf.Dec`.
    Dec(Decimal),
}

/// An exact decimal: `unscaled` × 10^`exponent`, with no trailing zeros in `unscaled`
/// (and an exponent of zero for zero), and at most [`MAX_DIGITS`] digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decimal {
    unscaled: i128,
    exponent: i64,
}

/// An arithmetic result out of what [`Decimal`] holds.
#[derive(Debug)]
struct OutOfRange;

impl Decimal {
    const ZERO: Decimal = Decimal {
        unscaled: 0,
        exponent: 0,
    };

    /// `unscaled` × 10^`exponent`, normalized, or `OutOfRange` with too many digits.
    fn new(mut unscaled: i128, mut exponent: i64) -> Result<Decimal, OutOfRange> {
        if unscaled == 0 {
            return Ok(Decimal::ZERO);
        }
        while unscaled % 10 == 0 {
            unscaled /= 10;
            exponent += 1;
        }
        if digits(unscaled) > MAX_DIGITS {
            return Err(OutOfRange);
        }
        Ok(Decimal { unscaled, exponent })
    }

    fn signum(self) -> i64 {
        i64::try_from(self.unscaled.signum()).unwrap_or(0)
    }

    /// The two unscaled values brought to the smaller of the two exponents.
    fn aligned(self, other: Decimal) -> Result<(i128, i128, i64), OutOfRange> {
        let exponent = self.exponent.min(other.exponent);
        let scale = |d: Decimal| -> Result<i128, OutOfRange> {
            let shift = u32::try_from(d.exponent - exponent).map_err(|_| OutOfRange)?;
            10i128
                .checked_pow(shift)
                .and_then(|factor| d.unscaled.checked_mul(factor))
                .ok_or(OutOfRange)
        };
        Ok((scale(self)?, scale(other)?, exponent))
    }

    fn checked_add(self, other: Decimal) -> Result<Decimal, OutOfRange> {
        if other.unscaled == 0 {
            return Ok(self);
        }
        if self.unscaled == 0 {
            return Ok(other);
        }
        let (a, b, exponent) = self.aligned(other)?;
        Decimal::new(a.checked_add(b).ok_or(OutOfRange)?, exponent)
    }

    fn neg(self) -> Decimal {
        // No trailing zeros and at most 38 digits: the negation fits.
        Decimal {
            unscaled: -self.unscaled,
            exponent: self.exponent,
        }
    }

    fn to_f64(self) -> f64 {
        // Exact for up to 2^53, then as close as a double gets.
        (self.unscaled as f64) * pow10(self.exponent)
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_sign = self.signum().cmp(&other.signum());
        if by_sign != Ordering::Equal || self.unscaled == 0 {
            return by_sign;
        }
        // Same sign, both non-zero: compare magnitudes by their number of digits before the
        // point first, which settles it unless they are equal; then the aligned values fit.
        let magnitude = |d: &Decimal| i64::from(digits(d.unscaled)) + d.exponent;
        let by_magnitude =
            magnitude(self)
                .cmp(&magnitude(other))
                .then_with(|| match self.aligned(*other) {
                    Ok((a, b, _)) => a.abs().cmp(&b.abs()),
                    // Equal magnitudes and at most 38 digits each: alignment doesn't overflow.
                    Err(OutOfRange) => Ordering::Equal,
                });
        if self.unscaled < 0 {
            by_magnitude.reverse()
        } else {
            by_magnitude
        }
    }
}

/// The number of decimal digits of `n`; 1 for zero.
fn digits(n: i128) -> u32 {
    n.unsigned_abs().checked_ilog10().map_or(1, |log| log + 1)
}

/// 10^`exponent` as a double, as Go's `math.Pow10`: exact where a double can be.
fn pow10(exponent: i64) -> f64 {
    format!("1e{exponent}")
        .parse()
        .unwrap_or(if exponent < 0 { 0.0 } else { f64::INFINITY })
}

impl Quantity {
    /// The exact value.
    fn decimal(&self) -> Decimal {
        match self.amount {
            Amount::Int64 { value, scale } => {
                // At most 19 digits: always within range.
                Decimal::new(i128::from(value), i64::from(scale)).unwrap_or(Decimal::ZERO)
            }
            Amount::Dec(decimal) => decimal,
        }
    }

    /// Go's `AsInt64`: the value as an `int64`, for a quantity held as one with a scale of
    /// zero or more, and which fits.
    fn as_int64(&self) -> Option<i64> {
        match self.amount {
            Amount::Int64 { value, scale } => {
                let scale = u32::try_from(scale).ok()?;
                10i64.checked_pow(scale).and_then(|f| value.checked_mul(f))
            }
            Amount::Dec(_) => None,
        }
    }

    /// `self + other`, as Go's `Quantity.Add` computes it: in `int64`s while both are held
    /// so and the sum fits, exactly otherwise.
    fn checked_add(&self, other: &Quantity) -> Result<Quantity, OutOfRange> {
        if let (
            Amount::Int64 {
                value: a,
                scale: sa,
            },
            Amount::Int64 {
                value: b,
                scale: sb,
            },
        ) = (self.amount, other.amount)
            && let Some((value, scale)) = int64_add(a, sa, b, sb)
        {
            return Ok(Quantity {
                amount: Amount::Int64 { value, scale },
            });
        }
        Ok(Quantity {
            amount: Amount::Dec(self.decimal().checked_add(other.decimal())?),
        })
    }

    /// `self - other`, as Go's `Quantity.Sub`: in `int64`s while both are held so and the
    /// difference fits (Go negates `other` with wrapping arithmetic, as here), exactly
    /// otherwise.
    fn checked_sub(&self, other: &Quantity) -> Result<Quantity, OutOfRange> {
        if let (
            Amount::Int64 {
                value: a,
                scale: sa,
            },
            Amount::Int64 {
                value: b,
                scale: sb,
            },
        ) = (self.amount, other.amount)
            && let Some((value, scale)) = int64_add(a, sa, b.wrapping_neg(), sb)
        {
            return Ok(Quantity {
                amount: Amount::Int64 { value, scale },
            });
        }
        Ok(Quantity {
            amount: Amount::Dec(self.decimal().checked_add(other.decimal().neg())?),
        })
    }

    /// An integer as Go's `NewQuantity(i, DecimalExponent)` holds it.
    fn from_int(value: i64) -> Quantity {
        Quantity {
            amount: Amount::Int64 { value, scale: 0 },
        }
    }
}

/// Go's `int64Amount.Add`: `a`×10^`sa` + `b`×10^`sb` at the smaller scale, if it fits; an
/// operand of zero leaves the other as it is.
fn int64_add(a: i64, sa: i32, b: i64, sb: i32) -> Option<(i64, i32)> {
    let rescale = |value: i64, by: i32| -> Option<i64> {
        10i64
            .checked_pow(u32::try_from(by).ok()?)
            .and_then(|f| value.checked_mul(f))
    };
    match (a, b) {
        (_, 0) => Some((a, sa)),
        (0, _) => Some((b, sb)),
        _ if sa == sb => Some((a.checked_add(b)?, sa)),
        _ if sa > sb => Some((rescale(a, sa.checked_sub(sb)?)?.checked_add(b)?, sb)),
        _ => Some((a.checked_add(rescale(b, sb.checked_sub(sa)?)?)?, sa)),
    }
}

/// What a suffix means: the value is multiplied by `base`^`exponent`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Suffix {
    /// Decimal SI or a decimal exponent: × 10^exponent.
    Decimal(i32),
    /// Binary SI: × 2^exponent.
    Binary(u32),
}

/// apimachinery's suffix table, then its `e`/`E` exponents.
fn interpret_suffix(suffix: &str) -> Option<Suffix> {
    let decimal = match suffix {
        "" => Some(0),
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(exponent) = decimal {
        return Some(Suffix::Decimal(exponent));
    }
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(exponent) = binary {
        return Some(Suffix::Binary(exponent));
    }
    let exponent = suffix.strip_prefix(['e', 'E'])?;
    // Go's `strconv.ParseInt` takes a sign, and the result is truncated to an `int32`.
    let parsed: i64 = parse_go_int(exponent)?;
    Some(Suffix::Decimal(parsed as i32))
}

/// Go's `strconv.ParseInt(s, 10, 64)`: an optional sign and decimal digits.
fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A quantity string split as apimachinery's `parseQuantityString` splits it.
struct Parts<'a> {
    positive: bool,
    /// The integer digits, leading zeros removed, `"0"` if none are left.
    num: &'a str,
    /// The digits after the point.
    denom: &'a str,
    suffix: &'a str,
}

/// apimachinery's `parseQuantityString`.
fn split_quantity(s: &str) -> Result<Parts<'_>, &'static str> {
    let bytes = s.as_bytes();
    let end = bytes.len();
    let mut pos = 0;
    let mut positive = true;
    match bytes.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    while pos < end && bytes[pos] == b'0' {
        pos += 1;
    }
    let zero = Parts {
        positive,
        num: "0",
        denom: "",
        suffix: "",
    };
    if pos >= end {
        return Ok(zero);
    }
    let num_start = pos;
    while pos < end && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let num = match &s[num_start..pos] {
        "" => "0",
        num => num,
    };
    let mut denom = "";
    if pos < end && bytes[pos] == b'.' {
        pos += 1;
        let denom_start = pos;
        while pos < end && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[denom_start..pos];
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&bytes[pos]) {
        pos += 1;
    }
    if pos < end && (bytes[pos] == b'-' || bytes[pos] == b'+') {
        pos += 1;
    }
    while pos < end && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(FORMAT_WRONG);
    }
    Ok(Parts {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// Parses a quantity as apimachinery's `resource.ParseQuantity` does, with its errors.
fn parse_quantity(s: &str) -> Result<Quantity, String> {
    if s.is_empty() {
        return Err(FORMAT_WRONG.to_owned());
    }
    let parts = split_quantity(s).map_err(str::to_owned)?;
    let suffix = interpret_suffix(parts.suffix).ok_or_else(|| BAD_SUFFIX.to_owned())?;
    if let Some(amount) = int64_fast_path(&parts, suffix)? {
        return Ok(Quantity { amount });
    }
    let decimal = exact_value(&parts, suffix).map_err(|OutOfRange| {
        format!(
            "quantity {s:?} has more than {MAX_DIGITS} significant digits, more than Palisade holds"
        )
    })?;
    Ok(Quantity {
        amount: Amount::Dec(decimal),
    })
}

/// The `int64` form Go parses a quantity into when it can: at most 18 digits (fewer for
/// binary SI), no finer than a nano-unit, and a product that fits.
fn int64_fast_path(parts: &Parts<'_>, suffix: Suffix) -> Result<Option<Amount>, String> {
    let digits = i64::try_from(parts.num.len() + parts.denom.len()).unwrap_or(i64::MAX);
    let (precision, mut scale, multiplier) = match suffix {
        Suffix::Decimal(exponent) => (18 - digits, i64::from(exponent), 1i64),
        Suffix::Binary(exponent) if parts.denom.is_empty() => {
            let num_len = i64::try_from(parts.num.len()).unwrap_or(i64::MAX);
            // Go: 15 - len(num) - int(float32(exponent)*3/10) - 1, exact for these exponents.
            let precision = 14 - num_len - i64::from(exponent) * 3 / 10;
            (precision, 0, 1i64 << exponent)
        }
        Suffix::Binary(_) => (-1, 0, 1),
    };
    if precision < 0 {
        return Ok(None);
    }
    scale -= i64::try_from(parts.denom.len()).unwrap_or(i64::MAX);
    if scale < NANO {
        return Ok(None);
    }
    let shifted = format!("{}{}", parts.num, parts.denom);
    let value: i64 = shifted.parse().map_err(|_| BAD_NUMBER.to_owned())?;
    let Some(value) = value.checked_mul(multiplier) else {
        return Ok(None);
    };
    let Ok(scale) = i32::try_from(scale) else {
        return Ok(None);
    };
    let value = if parts.positive { value } else { -value };
    Ok(Some(Amount::Int64 { value, scale }))
}

/// The value Go computes with arbitrary precision when the `int64` form doesn't do:
/// rounded up, away from zero, to a nano-unit, and binary SI values capped at the largest
/// `int64`.
fn exact_value(parts: &Parts<'_>, suffix: Suffix) -> Result<Decimal, OutOfRange> {
    let denom_len = i64::try_from(parts.denom.len()).map_err(|_| OutOfRange)?;
    let all_digits = format!("{}{}", parts.num, parts.denom);
    let (mut digits_str, mut exponent) = match suffix {
        Suffix::Decimal(exponent) => (all_digits, i64::from(exponent) - denom_len),
        Suffix::Binary(exponent) => {
            // The digits times 2^exponent, at the scale of the fraction.
            let unscaled = parse_decimal(&all_digits, 0)?;
            let scaled = unscaled
                .unscaled
                .checked_mul(1i128 << exponent)
                .ok_or(OutOfRange)?;
            let scaled = Decimal::new(scaled, unscaled.exponent)?;
            let digits_str = scaled.unscaled.to_string();
            (digits_str, scaled.exponent - denom_len)
        }
    };
    // Round up to a nano-unit: drop the digits finer than 10^-9, adding one if any of them
    // wasn't zero.
    let mut round_up = false;
    if exponent < NANO {
        let drop = usize::try_from(NANO - exponent).map_err(|_| OutOfRange)?;
        let keep = digits_str.len().saturating_sub(drop);
        round_up = digits_str[keep..].bytes().any(|b| b != b'0');
        digits_str.truncate(keep);
        exponent = NANO;
    }
    let mut magnitude = parse_decimal(&digits_str, exponent)?;
    if round_up {
        magnitude = magnitude.checked_add(Decimal::new(1, NANO)?)?;
    }
    if matches!(suffix, Suffix::Binary(_)) {
        let max = Decimal::new(i128::from(i64::MAX), 0)?;
        magnitude = magnitude.min(max);
    }
    Ok(if parts.positive {
        magnitude
    } else {
        magnitude.neg()
    })
}

/// Decimal digits, leading zeros and all, times 10^`exponent`; no digits are zero.
fn parse_decimal(digits: &str, exponent: i64) -> Result<Decimal, OutOfRange> {
    let significant = digits.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    if trimmed.is_empty() {
        return Ok(Decimal::ZERO);
    }
    if trimmed.len() > MAX_DIGITS as usize {
        return Err(OutOfRange);
    }
    let zeros = i64::try_from(significant.len() - trimmed.len()).map_err(|_| OutOfRange)?;
    let unscaled: i128 = trimmed.parse().map_err(|_| OutOfRange)?;
    Decimal::new(unscaled, exponent.checked_add(zeros).ok_or(OutOfRange)?)
}

/// Declares the quantity library on `env`.
pub(super) fn extension(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_type(QUANTITY_TYPE.to_owned())?;
    cel::add_overload!(env, fn quantity: (CelString) -> Result<Quantity>, id = "string_to_quantity")?;
    cel::add_overload!(env, fn is_quantity: (CelString) -> CelBool, id = "is_quantity_string")?;
    cel::add_member_overload!(env, fn is_integer: (Quantity) -> CelBool, id = "quantity_is_integer")?;
    cel::add_member_overload!(env, fn as_integer: (Quantity) -> Result<CelInt>,
        id = "quantity_get_int")?;
    cel::add_member_overload!(env, fn as_approximate_float: (Quantity) -> CelDouble,
        id = "quantity_get_float")?;
    cel::add_member_overload!(env, fn sign: (Quantity) -> CelInt, id = "quantity_get_sign")?;
    cel::add_member_overload!(env, fn is_greater_than: (Quantity, Quantity) -> CelBool,
        id = "quantity_is_greater_than")?;
    cel::add_member_overload!(env, fn is_less_than: (Quantity, Quantity) -> CelBool,
        id = "quantity_is_less_than")?;
    cel::add_member_overload!(env, fn compare_to: (Quantity, Quantity) -> CelInt,
        id = "quantity_compare_to")?;
    cel::add_member_overload!(env, fn add: (Quantity, Quantity) -> Result<Quantity>,
        id = "quantity_add")?;
    cel::add_member_overload!(env, fn add_int: (Quantity, CelInt) -> Result<Quantity>,
        name = "add", id = "quantity_add_int")?;
    cel::add_member_overload!(env, fn sub: (Quantity, Quantity) -> Result<Quantity>,
        id = "quantity_sub")?;
    cel::add_member_overload!(env, fn sub_int: (Quantity, CelInt) -> Result<Quantity>,
        name = "sub", id = "quantity_sub_int")?;
    Ok(())
}

fn quantity(s: &CelString<'_>) -> Result<Quantity, ExecutionError> {
    parse_quantity(s.inner()).map_err(|e| ExecutionError::function_error("quantity", e))
}

fn is_quantity(s: &CelString<'_>) -> CelBool {
    parse_quantity(s.inner()).is_ok().into()
}

fn is_integer(q: &Quantity) -> CelBool {
    q.as_int64().is_some().into()
}

fn as_integer(q: &Quantity) -> Result<CelInt, ExecutionError> {
    q.as_int64().map(CelInt::from).ok_or_else(|| {
        ExecutionError::function_error("asInteger", "cannot convert value to integer")
    })
}

/// Go's `AsApproximateFloat64`: the held digits times the power of ten.
fn as_approximate_float(q: &Quantity) -> CelDouble {
    match q.amount {
        Amount::Int64 { value, scale } => (value as f64) * pow10(i64::from(scale)),
        Amount::Dec(decimal) => decimal.to_f64(),
    }
    .into()
}

fn sign(q: &Quantity) -> CelInt {
    q.decimal().signum().into()
}

fn is_greater_than(q: &Quantity, other: &Quantity) -> CelBool {
    (q.decimal() > other.decimal()).into()
}

fn is_less_than(q: &Quantity, other: &Quantity) -> CelBool {
    (q.decimal() < other.decimal()).into()
}

fn compare_to(q: &Quantity, other: &Quantity) -> CelInt {
    match q.decimal().cmp(&other.decimal()) {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
    .into()
}

/// The error of a sum out of the range held here.
fn out_of_range(function: &str) -> ExecutionError {
    ExecutionError::function_error(
        function,
        format!(
            "the result has more than {MAX_DIGITS} significant digits, more than Palisade holds"
        ),
    )
}

fn add(q: &Quantity, other: &Quantity) -> Result<Quantity, ExecutionError> {
    q.checked_add(other)
        .map_err(|OutOfRange| out_of_range("add"))
}

fn add_int(q: &Quantity, other: &CelInt) -> Result<Quantity, ExecutionError> {
    add(q, &Quantity::from_int(*other.inner()))
}

fn sub(q: &Quantity, other: &Quantity) -> Result<Quantity, ExecutionError> {
    q.checked_sub(other)
        .map_err(|OutOfRange| out_of_range("sub"))
}

fn sub_int(q: &Quantity, other: &CelInt) -> Result<Quantity, ExecutionError> {
    sub(q, &Quantity::from_int(*other.inner()))
}
