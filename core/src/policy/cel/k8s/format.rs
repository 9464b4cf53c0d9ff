//! Kubernetes' format library (`library/format.go`, Kubernetes 1.31+): the
//! `kubernetes.NamedFormat` type, `format.<name>()` for each named format, `format.named(s)`,
//! and `<format>.validate(s)`, which is `optional.none()` for a valid string and an optional
//! list of what is wrong otherwise.
//!
//! The label, subdomain and qualified-name formats give apimachinery's messages
//! (`k8s.io/apimachinery/pkg/util/validation`), word for word; `uri` gives Go's `url` error,
//! and the others the fixed message Kubernetes gives.

use super::{opaque_val, string_list, take_args, urls};
use cel::common::types::{CelOptional, CelString, Kind, STRING_TYPE, Type};
use cel::common::value::CowVal;
use cel::{DeclarationError, Env, ExecutionError};
use regex::Regex;
use std::sync::LazyLock;

/// The type of named formats, as Kubernetes names it.
pub(super) static FORMAT_TYPE: Type = Type::simple_type(Kind::Opaque, "kubernetes.NamedFormat");

/// A named format: what `format.dns1123Label()` and the others return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Format(Named);
opaque_val!(Format, FORMAT_TYPE);

/// The formats Kubernetes names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    Dns1123Label,
    Dns1123Subdomain,
    Dns1035Label,
    QualifiedName,
    Dns1123LabelPrefix,
    Dns1123SubdomainPrefix,
    Dns1035LabelPrefix,
    LabelValue,
    Uri,
    Uuid,
    Byte,
    Date,
    Datetime,
}

/// Each format with the name `format.named()` and `format.<name>()` know it by.
const NAMES: [(&str, Named); 13] = [
    ("dns1123Label", Named::Dns1123Label),
    ("dns1123Subdomain", Named::Dns1123Subdomain),
    ("dns1035Label", Named::Dns1035Label),
    ("qualifiedName", Named::QualifiedName),
    ("dns1123LabelPrefix", Named::Dns1123LabelPrefix),
    ("dns1123SubdomainPrefix", Named::Dns1123SubdomainPrefix),
    ("dns1035LabelPrefix", Named::Dns1035LabelPrefix),
    ("labelValue", Named::LabelValue),
    ("uri", Named::Uri),
    ("uuid", Named::Uuid),
    ("byte", Named::Byte),
    ("date", Named::Date),
    ("datetime", Named::Datetime),
];

/// Declares one zero-argument `format.<name>()` overload per format.
macro_rules! constant_formats {
    ($env:expr, $( $fn_name:ident => $name:literal, $named:ident; )*) => {{
        $(
            fn $fn_name<'b, 'v>(
                _args: Vec<CowVal<'b, 'v>>,
            ) -> Result<CowVal<'b, 'v>, ExecutionError> {
                Ok(CowVal::owned(Format(Named::$named)))
            }
            $env.add_overload(concat!("format.", $name), concat!("format.", $name), vec![], $fn_name)?;
        )*
    }};
}

/// Declares the format library on `env`.
pub(super) fn extension(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_type(FORMAT_TYPE.to_owned())?;
    constant_formats!(env,
        dns1123_label => "dns1123Label", Dns1123Label;
        dns1123_subdomain => "dns1123Subdomain", Dns1123Subdomain;
        dns1035_label => "dns1035Label", Dns1035Label;
        qualified_name => "qualifiedName", QualifiedName;
        dns1123_label_prefix => "dns1123LabelPrefix", Dns1123LabelPrefix;
        dns1123_subdomain_prefix => "dns1123SubdomainPrefix", Dns1123SubdomainPrefix;
        dns1035_label_prefix => "dns1035LabelPrefix", Dns1035LabelPrefix;
        label_value => "labelValue", LabelValue;
        uri => "uri", Uri;
        uuid => "uuid", Uuid;
        byte => "byte", Byte;
        date => "date", Date;
        datetime => "datetime", Datetime;
    );
    env.add_overload("format.named", "format-named", vec![STRING_TYPE], named)?;
    env.add_member_overload(
        "validate",
        "format-validate",
        FORMAT_TYPE.to_owned(),
        vec![STRING_TYPE],
        validate_call,
    )?;
    Ok(())
}

/// `format.named(name)`: the format of that name, or `optional.none()`.
fn named<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [name] = take_args(args)?;
    let name = super::arg::<CelString>("format.named", name.as_ref())?;
    let format = NAMES
        .iter()
        .find(|(n, _)| *n == name.inner())
        .map(|(_, named)| Box::new(Format(*named)) as Box<dyn cel::common::value::Val>);
    Ok(CowVal::owned(CelOptional::from(format)))
}

/// `<format>.validate(s)`: `optional.none()` if `s` is valid, else the optional list of
/// what is wrong with it.
fn validate_call<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [format, value] = take_args(args)?;
    let format = super::arg::<Format>("validate", format.as_ref())?;
    let value = super::arg::<CelString>("validate", value.as_ref())?;
    let errors = validate(format.0, value.inner());
    let result = if errors.is_empty() {
        CelOptional::none()
    } else {
        CelOptional::of(Box::new(string_list(errors)))
    };
    Ok(CowVal::owned(result))
}

/// What is wrong with `value` as a `format`, in apimachinery's (or Kubernetes') words.
fn validate(format: Named, value: &str) -> Vec<String> {
    match format {
        Named::Dns1123Label => is_dns1123_label(value),
        Named::Dns1123Subdomain => is_dns1123_subdomain(value),
        Named::Dns1035Label => is_dns1035_label(value),
        Named::QualifiedName => is_qualified_name(value),
        Named::Dns1123LabelPrefix => is_dns1123_label(&mask_trailing_dash(value)),
        Named::Dns1123SubdomainPrefix => is_dns1123_subdomain(&mask_trailing_dash(value)),
        Named::Dns1035LabelPrefix => is_dns1035_label(&mask_trailing_dash(value)),
        Named::LabelValue => is_valid_label_value(value),
        Named::Uri => match urls::parse_request_uri(value) {
            Ok(_) => Vec::new(),
            Err(e) => vec![e],
        },
        Named::Uuid => fixed(UUID.is_match(value), "does not match the UUID format"),
        Named::Byte => fixed(BASE64.is_match(value), "invalid base64"),
        Named::Date => fixed(is_date(value), "invalid date"),
        Named::Datetime => fixed(is_date_time(value), "invalid datetime"),
    }
}

/// No error if `valid`, else `message`.
fn fixed(valid: bool, message: &str) -> Vec<String> {
    if valid {
        Vec::new()
    } else {
        vec![message.to_owned()]
    }
}

/// A regular expression of this module, matched against the whole string.
fn whole(pattern: &str) -> Regex {
    #[allow(
        clippy::expect_used,
        reason = "the patterns are constants of this module"
    )]
    Regex::new(&format!("^(?:{pattern})$")).expect("a valid regular expression")
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

static DNS1123_LABEL: LazyLock<Regex> = LazyLock::new(|| whole(DNS1123_LABEL_FMT));
static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| whole(DNS1123_SUBDOMAIN_FMT));
static DNS1035_LABEL: LazyLock<Regex> = LazyLock::new(|| whole(DNS1035_LABEL_FMT));
static QUALIFIED_NAME: LazyLock<Regex> = LazyLock::new(|| whole(QUALIFIED_NAME_FMT));
static LABEL_VALUE: LazyLock<Regex> = LazyLock::new(|| whole(LABEL_VALUE_FMT));
/// kube-openapi's `strfmt.UUIDPattern`: dashes optional, any case.
static UUID: LazyLock<Regex> =
    LazyLock::new(|| whole("(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"));
/// govalidator's `Base64`, which kube-openapi validates `byte` with: padded standard base64,
/// not empty.
static BASE64: LazyLock<Regex> = LazyLock::new(|| {
    whole(r"(?:[A-Za-z0-9+\/]{4})*(?:[A-Za-z0-9+\/]{2}==|[A-Za-z0-9+\/]{3}=|[A-Za-z0-9+\/]{4})")
});
/// kube-openapi's `strfmt.DateTimePattern`, for what follows the `t`. The `.` is any
/// character, as there.
static TIME: LazyLock<Regex> = LazyLock::new(|| {
    whole("([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))")
});

/// apimachinery's `MaxLenError`.
fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// apimachinery's `RegexError`: the message, examples and the expression.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{fmt}')",
        examples.join(" or ")
    )
}

/// apimachinery's `IsDNS1123Label`. Lengths are in bytes, as Go's `len`.
fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push(max_len_error(63));
    }
    if !DNS1123_LABEL.is_match(value) {
        if DNS1123_SUBDOMAIN.is_match(value) {
            // A valid subdomain, not a valid label: the length is checked, so dots.
            errors.push("must not contain dots".to_owned());
        } else {
            errors.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errors
}

/// apimachinery's `IsDNS1123Subdomain`.
fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 253 {
        errors.push(max_len_error(253));
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errors
}

/// apimachinery's `IsDNS1035Label`.
fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push(max_len_error(63));
    }
    if !DNS1035_LABEL.is_match(value) {
        errors.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errors
}

/// apimachinery's `IsQualifiedName`: a name of at most 63 characters, with an optional DNS
/// subdomain prefix and `/`.
fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                errors.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|e| format!("prefix part {e}")),
                );
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errors.push(format!("name part {}", max_len_error(63)));
    }
    if !QUALIFIED_NAME.is_match(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// apimachinery's `IsValidLabelValue`.
fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push(max_len_error(63));
    }
    if !LABEL_VALUE.is_match(value) {
        errors.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// apimachinery's `maskTrailingDash`, which lets a name prefix (a `generateName`) end with
/// `-`: the last two characters become `a`, as there. Go slices bytes; a name that isn't
/// ASCII fails the expressions either way.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        let cut = name.len() - 2;
        match name.get(..cut) {
            Some(head) => format!("{head}a"),
            None => name.to_owned(),
        }
    } else {
        name.to_owned()
    }
}

/// Go's `time.Parse("2006-01-02", value)`: four-digit year, two-digit month and day, the
/// day within its month.
fn is_date(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() != 10
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit())
    {
        return false;
    }
    let number = |range: std::ops::Range<usize>| value[range].parse::<u16>().ok();
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    let Ok(month) = u8::try_from(month)
        .map_err(|_| ())
        .and_then(|m| time::Month::try_from(m).map_err(|_| ()))
    else {
        return false;
    };
    let Ok(day) = u8::try_from(day) else {
        return false;
    };
    time::Date::from_calendar_date(i32::from(year), month, day).is_ok()
}

/// kube-openapi's `strfmt.IsDateTime`: split at each `t`, case-insensitively, a date before
/// the first, and a time matching its pattern, with hours, minutes and seconds in range,
/// between the first and the second (anything after a second `t` is ignored, as there).
fn is_date_time(value: &str) -> bool {
    if value.len() < 4 {
        return false;
    }
    let lower = value.to_lowercase();
    let parts: Vec<&str> = lower.split('t').collect();
    if parts.len() < 2 || !is_date(parts[0]) {
        return false;
    }
    let Some(captures) = TIME.captures(parts[1]) else {
        return false;
    };
    let field = |i: usize| captures.get(i).map_or("", |m| m.as_str());
    field(1) <= "23" && field(2) <= "59" && field(3) <= "59"
}
