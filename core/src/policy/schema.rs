//! Checks a constraint's `spec.parameters` against its template's `openAPIV3Schema`.
//!
//! Covers what Gatekeeper templates use: `type`, `properties`, `additionalProperties`, `items`,
//! `required`, `enum`, `nullable`, `x-kubernetes-preserve-unknown-fields`, `anyOf`/`oneOf`,
//! `minimum`/`maximum`, `minItems`/`maxItems`, `minLength`/`maxLength` and `pattern`. Unlike the
//! API server, which silently prunes fields a schema does not declare, an undeclared field is an
//! error here: a misspelt parameter would otherwise fall back to the policy's default unnoticed.

use serde_json::Value;

use crate::object::json_type;

/// Every problem found, each as "`path`: what is wrong".
pub(crate) fn validate(value: &Value, schema: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(value, schema, "parameters", &mut errors);
    errors
}

fn check(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    if !schema.is_object() {
        return;
    }
    if value.is_null() {
        if schema["nullable"] != true && schema.get("type").is_some() {
            errors.push(format!("{path}: must not be null"));
        }
        return;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema[key].as_array() {
            let matching = options
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    check(value, s, path, &mut e);
                    e.is_empty()
                })
                .count();
            let ok = if key == "anyOf" {
                matching > 0
            } else {
                matching == 1
            };
            if !ok {
                errors.push(format!(
                    "{path}: matches {matching} of the {} schemas in {key}",
                    options.len()
                ));
            }
        }
    }
    if let Some(expected) = schema["type"].as_str()
        && !type_matches(value, expected)
    {
        errors.push(format!(
            "{path}: expected {expected}, found {}",
            json_type(value)
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push(format!(
            "{path}: {value} is not one of [{}]",
            list.join(", ")
        ));
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = required.as_str()
                    && !map.contains_key(name)
                {
                    errors.push(format!("{path}.{name}: required"));
                }
            }
            for (key, item) in map {
                let item_path = format!("{path}.{key}");
                if let Some(sub) = properties.and_then(|p| p.get(key)) {
                    check(item, sub, &item_path, errors);
                } else if schema["additionalProperties"].is_object() {
                    check(item, &schema["additionalProperties"], &item_path, errors);
                } else if schema["additionalProperties"] == true || preserve {
                } else if properties.is_some() || schema["additionalProperties"] == false {
                    let known: Vec<&String> =
                        properties.map(|p| p.keys().collect()).unwrap_or_default();
                    errors.push(format!(
                        "{item_path}: not a parameter of this template (known: {})",
                        known
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                errors.push(format!("{path}: needs at least {min} items"));
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && (items.len() as u64) > max
            {
                errors.push(format!("{path}: allows at most {max} items"));
            }
            if schema["items"].is_object() {
                for (i, item) in items.iter().enumerate() {
                    check(item, &schema["items"], &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64()
                && len < min
            {
                errors.push(format!("{path}: shorter than {min} characters"));
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && len > max
            {
                errors.push(format!("{path}: longer than {max} characters"));
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => {
                        errors.push(format!("{path}: {s:?} does not match {pattern:?}"))
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{path}: schema pattern is invalid: {e}")),
                }
            }
        }
        Value::Number(n) => {
            if let (Some(min), Some(v)) = (schema["minimum"].as_f64(), n.as_f64())
                && v < min
            {
                errors.push(format!("{path}: {v} is below the minimum {min}"));
            }
            if let (Some(max), Some(v)) = (schema["maximum"].as_f64(), n.as_f64())
                && v > max
            {
                errors.push(format!("{path}: {v} is above the maximum {max}"));
            }
        }
        _ => {}
    }
}

fn type_matches(value: &Value, expected: &str) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "labels": {"type": "array", "items": {"type": "object",
                    "properties": {"key": {"type": "string"}, "allowedRegex": {"type": "string"}},
                    "required": ["key"]}},
                "action": {"type": "string", "enum": ["deny", "warn"]},
                "max": {"type": "integer", "minimum": 1},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "byName": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        })
    }

    #[test]
    fn accepts_valid_parameters() {
        let params = json!({"labels": [{"key": "owner"}], "action": "warn", "max": 3,
            "extra": {"anything": [1]}, "byName": {"a": "b"}});
        assert_eq!(validate(&params, &schema()), Vec::<String>::new());
    }

    #[test]
    fn names_the_field_of_each_problem() {
        let params = json!({"labels": [{"allowedRegex": 5}], "action": "block", "max": 0,
            "lables": [], "byName": {"a": 1}});
        let errors = validate(&params, &schema());
        for expected in [
            "parameters.labels[0].key: required",
            "parameters.labels[0].allowedRegex: expected string, found a number",
            "parameters.action: \"block\" is not one of [\"deny\", \"warn\"]",
            "parameters.max: 0 is below the minimum 1",
            "parameters.lables: not a parameter of this template",
            "parameters.byName.a: expected string, found a number",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(expected)),
                "missing {expected:?} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), 6, "{errors:#?}");
    }

    #[test]
    fn a_schema_without_properties_accepts_any_object() {
        assert!(validate(&json!({"x": 1}), &json!({"type": "object"})).is_empty());
    }
}
