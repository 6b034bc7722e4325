//! The event envelope: one domain event plus what the store needs to know about it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{AggregateId, EventId, Position, Version};

/// Context carried with every event. Correlation and causation ids are first-class; anything
/// else a writer wants to record goes in `extra`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Metadata {
    /// Ties together every event caused, directly or not, by one user request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The id of the command (or event) that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Any further key/value pairs.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

// By hand rather than derived: a derived `#[serde(flatten)]` buffers every field before
// reading it, and every event read carries metadata.
impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Metadata;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of event metadata")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Metadata, A::Error> {
                let mut metadata = Metadata::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "correlation_id" => metadata.correlation_id = map.next_value()?,
                        "causation_id" => metadata.causation_id = map.next_value()?,
                        _ => {
                            metadata.extra.insert(key, map.next_value()?);
                        }
                    }
                }
                Ok(metadata)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// An event's payload: JSON text, kept exactly as it was written. The store never looks
/// inside beyond checking that it is an object; readers decode it straight into their own
/// types ([`Payload::decode`]), without building a `serde_json::Value` on the way.
///
/// Two payloads are equal when their text is: the store hands back the text it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload(Box<str>);

impl Payload {
    /// Checks that `text` is JSON and keeps it as it is (less any surrounding whitespace).
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.into()).map(Self::from)
    }

    /// Text the database has already checked to be JSON (a `json` column).
    pub(crate) fn from_stored(text: String) -> Self {
        Self(text.into_boxed_str())
    }

    /// Serialises a value.
    pub fn to_payload<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self::from)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the payload is a JSON object (the store refuses anything else).
    pub fn is_object(&self) -> bool {
        // The text is valid JSON, so its first character tells its kind.
        self.as_str().trim_start().starts_with('{')
    }

    /// Decodes the payload into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }
}

impl Default for Payload {
    /// `{}`.
    fn default() -> Self {
        Self("{}".into())
    }
}

impl From<Box<RawValue>> for Payload {
    fn from(raw: Box<RawValue>) -> Self {
        Self(raw.into())
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        // `Value`'s Display writes its JSON text, and cannot fail.
        Self(value.to_string().into_boxed_str())
    }
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event as written by an aggregate, before the store gives it a global position.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    /// Unique across the store; appending an id twice stores it once.
    pub event_id: EventId,
    /// The event's name, in the past tense (`OrderPlaced`).
    pub event_type: String,
    /// The aggregate, and so the stream, the event belongs to.
    pub aggregate_id: AggregateId,
    /// The kind of aggregate (`Order`).
    pub aggregate_type: String,
    /// The event's version within its stream: 1 for the first event.
    pub version: Version,
    /// When the event happened, from the writer's clock.
    pub timestamp: DateTime<Utc>,
    /// The event's stored JSON form; always a JSON object.
    pub payload: Payload,
    /// Correlation, causation and any other context.
    pub metadata: Metadata,
}

impl EventEnvelope {
    /// Starts building an envelope; see [`EventEnvelopeBuilder`].
    pub fn builder() -> EventEnvelopeBuilder {
        EventEnvelopeBuilder::default()
    }
}

/// Builds an [`EventEnvelope`]. The event id defaults to a fresh random id, the version to 1,
/// the timestamp to now, the payload to `{}`. The store validates the result on append.
#[derive(Debug, Default)]
pub struct EventEnvelopeBuilder {
    event_id: Option<EventId>,
    event_type: String,
    aggregate_id: Option<AggregateId>,
    aggregate_type: String,
    version: Option<Version>,
    timestamp: Option<DateTime<Utc>>,
    payload: Option<Payload>,
    metadata: Metadata,
}

impl EventEnvelopeBuilder {
    /// Sets the event id (for example one derived from a command id, to make retries idempotent).
    pub fn event_id(mut self, id: EventId) -> Self {
        self.event_id = Some(id);
        self
    }

    /// Sets the event's type name.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = event_type.into();
        self
    }

    /// Sets the aggregate the event belongs to.
    pub fn aggregate_id(mut self, id: AggregateId) -> Self {
        self.aggregate_id = Some(id);
        self
    }

    /// Sets the kind of aggregate.
    pub fn aggregate_type(mut self, aggregate_type: impl Into<String>) -> Self {
        self.aggregate_type = aggregate_type.into();
        self
    }

    /// Sets the event's version within its stream.
    pub fn version(mut self, version: Version) -> Self {
        self.version = Some(version);
        self
    }

    /// Sets when the event happened.
    pub fn timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the payload.
    pub fn payload_raw(mut self, payload: impl Into<Payload>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Sets the payload by serialising a value.
    pub fn payload<T: Serialize>(self, payload: &T) -> Result<Self, serde_json::Error> {
        Ok(self.payload_raw(Payload::to_payload(payload)?))
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.metadata.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.metadata.causation_id = Some(id);
        self
    }

    /// Sets the whole metadata.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Finishes the envelope.
    pub fn build(self) -> EventEnvelope {
        EventEnvelope {
            event_id: self.event_id.unwrap_or_default(),
            event_type: self.event_type,
            aggregate_id: self.aggregate_id.unwrap_or_default(),
            aggregate_type: self.aggregate_type,
            version: self.version.unwrap_or(Version::first()),
            timestamp: self.timestamp.unwrap_or_else(Utc::now),
            payload: self.payload.unwrap_or_default(),
            metadata: self.metadata,
        }
    }
}

/// An event read back from the store, with its place in the global log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Where the event sits in the global log.
    pub position: Position,
    /// The event itself.
    pub envelope: EventEnvelope,
}

impl std::ops::Deref for RecordedEvent {
    type Target = EventEnvelope;

    fn deref(&self) -> &EventEnvelope {
        &self.envelope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_with_its_extra_fields() {
        let metadata = Metadata {
            correlation_id: Some(Uuid::from_u128(1)),
            causation_id: None,
            extra: BTreeMap::from([("tenant".to_owned(), serde_json::json!({ "id": 7 }))]),
        };
        let text = serde_json::to_string(&metadata).unwrap();
        assert_eq!(serde_json::from_str::<Metadata>(&text).unwrap(), metadata);
        let read: Metadata =
            serde_json::from_str(r#"{"causation_id": null, "correlation_id": "00000000-0000-0000-0000-000000000001", "tenant": {"id": 7}}"#)
                .unwrap();
        assert_eq!(read, metadata);
        assert!(serde_json::from_str::<Metadata>(r#"{"correlation_id": 5}"#).is_err());
        assert!(serde_json::from_str::<Metadata>("[]").is_err());
    }

    #[test]
    fn a_payload_is_its_json_text() {
        let payload = Payload::parse("  {\"b\": 1, \"a\": [true]} ").unwrap();
        assert_eq!(payload.as_str(), "{\"b\": 1, \"a\": [true]}");
        assert!(payload.is_object());
        assert_eq!(
            payload.decode::<serde_json::Value>().unwrap(),
            serde_json::json!({ "a": [true], "b": 1 })
        );
        assert!(Payload::parse("{\"a\":").is_err());
        assert!(!Payload::from(serde_json::json!([1])).is_object());
        assert_eq!(Payload::default().as_str(), "{}");
    }
}
