//! One schema version, compiled by a well-kept validator (`jsonschema`,
//! `apache-avro`), and the test of a message body against it.

use std::fmt;

use serde_json::Value;

/// The schema languages the registry takes, named as Confluent's
/// `schemaType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaType {
    Json,
    Avro,
    Protobuf,
}

impl SchemaType {
    pub fn parse(s: &str) -> Result<SchemaType, String> {
        match s {
            "JSON" => Ok(SchemaType::Json),
            // Confluent's default when schemaType is absent.
            "AVRO" | "" => Ok(SchemaType::Avro),
            "PROTOBUF" => Ok(SchemaType::Protobuf),
            other => Err(format!(
                "unknown schemaType '{other}' (JSON, AVRO, PROTOBUF)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Json => "JSON",
            SchemaType::Avro => "AVRO",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }
}

/// A schema ready to check bodies with.
pub enum Compiled {
    Json {
        validator: Box<jsonschema::Validator>,
        /// The schema as JSON, for compatibility checks.
        document: Value,
    },
    Avro(Box<apache_avro::Schema>),
    /// The first message type of a `.proto` file, as Confluent's default.
    Protobuf(prost_reflect::MessageDescriptor),
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compiled::Json { .. } => f.write_str("Compiled::Json"),
            Compiled::Avro(_) => f.write_str("Compiled::Avro"),
            Compiled::Protobuf(m) => write!(f, "Compiled::Protobuf({})", m.full_name()),
        }
    }
}

impl Compiled {
    /// Compile `text` as a schema of `kind`; the error says why it is not one.
    pub fn new(kind: SchemaType, text: &str) -> Result<Compiled, String> {
        match kind {
            SchemaType::Json => {
                let document: Value = serde_json::from_str(text)
                    .map_err(|e| format!("Invalid schema: not JSON: {e}"))?;
                let validator = jsonschema::validator_for(&document)
                    .map_err(|e| format!("Invalid schema: {e}"))?;
                Ok(Compiled::Json {
                    validator: Box::new(validator),
                    document,
                })
            }
            SchemaType::Avro => apache_avro::Schema::parse_str(text)
                .map(|s| Compiled::Avro(Box::new(s)))
                .map_err(|e| format!("Invalid schema: {e}")),
            SchemaType::Protobuf => protobuf_message(text).map(Compiled::Protobuf),
        }
    }

    /// Check a message body: JSON text against a JSON schema, an Avro
    /// binary datum (no container, no prefix) against an Avro schema. The
    /// error is what a producer reads in `x-schema-error`.
    pub fn check(&self, body: &[u8]) -> Result<(), String> {
        match self {
            Compiled::Json { validator, .. } => {
                let instance: Value = serde_json::from_slice(body)
                    .map_err(|e| format!("the body is not JSON: {e}"))?;
                match validator.iter_errors(&instance).next() {
                    None => Ok(()),
                    Some(e) => Err(format!("{} at '{}'", e, e.instance_path())),
                }
            }
            Compiled::Avro(schema) => {
                let mut reader = body;
                apache_avro::reader::datum::GenericDatumReader::builder(schema)
                    .build()
                    .and_then(|r| r.read_value(&mut reader))
                    .map_err(|e| format!("the body is not a datum of the schema: {e}"))?;
                if !reader.is_empty() {
                    return Err(format!(
                        "the body is not a datum of the schema: {} bytes left over",
                        reader.len()
                    ));
                }
                Ok(())
            }
            Compiled::Protobuf(message) => {
                prost_reflect::DynamicMessage::decode(message.clone(), body)
                    .map(drop)
                    .map_err(|e| format!("the body is not a {} message: {e}", message.full_name()))
            }
        }
    }
}

/// The name a registered `.proto` text is compiled under.
const PROTO_FILE: &str = "schema.proto";

/// Compile `.proto` text (imports of Google's well-known types allowed)
/// with protox and take its first message type.
fn protobuf_message(text: &str) -> Result<prost_reflect::MessageDescriptor, String> {
    use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

    struct OneFile(String);
    impl FileResolver for OneFile {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            if name == PROTO_FILE {
                File::from_source(name, &self.0)
            } else {
                Err(protox::Error::file_not_found(name))
            }
        }
    }
    let mut resolver = ChainFileResolver::new();
    resolver.add(OneFile(text.to_string()));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler
        .open_file(PROTO_FILE)
        .map_err(|e| format!("Invalid schema: {e}"))?;
    let pool = compiler.descriptor_pool();
    pool.get_file_by_name(PROTO_FILE)
        .and_then(|f| f.messages().next())
        .ok_or_else(|| "Invalid schema: the .proto file defines no message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_are_checked_by_jsonschema() {
        let c = Compiled::new(
            SchemaType::Json,
            r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#,
        )
        .unwrap();
        assert!(c.check(br#"{"id": 5}"#).is_ok());
        let e = c.check(br#"{"id": "x"}"#).unwrap_err();
        assert!(e.contains("/id"), "{e}");
        assert!(c.check(b"not json").is_err());
        assert!(Compiled::new(SchemaType::Json, r#"{"type": 5}"#).is_err());
    }

    #[test]
    fn avro_bodies_are_decoded_by_apache_avro() {
        let c = Compiled::new(
            SchemaType::Avro,
            r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"}]}"#,
        )
        .unwrap();
        // zig-zag varint 1 = 2.
        assert!(c.check(&[2]).is_ok());
        assert!(c.check(&[]).is_err());
        assert!(c.check(&[2, 2]).is_err());
        assert!(Compiled::new(SchemaType::Avro, r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn protobuf_bodies_are_decoded_as_the_first_message() {
        let c = Compiled::new(
            SchemaType::Protobuf,
            "syntax = \"proto3\"; message Reading { string sensor = 1; int64 value = 2; }",
        )
        .unwrap();
        // field 1 (len-delimited) "t1", field 2 (varint) 5.
        assert!(c.check(&[0x0a, 2, b't', b'1', 0x10, 5]).is_ok());
        // field 1 with the varint wire type: not a Reading.
        assert!(c.check(&[0x08, 1]).is_err());
        assert!(Compiled::new(SchemaType::Protobuf, "message {").is_err());
    }
}
