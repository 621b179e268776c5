//! The hash chain and signatures over dose events.
//!
//! Each device numbers its events 1, 2, 3, … For event *n* the canonical bytes are the compact
//! JSON of [`ChainRecord`] (fields in declaration order, no whitespace); its hash is
//! `sha256(canonical)`, its `previous_hash` is the hash of event *n − 1* ([`GENESIS_HASH`] for
//! the first), and the signature is Ed25519 over the 32 hash bytes with the device's key. Any
//! edit changes a hash, any deletion or reordering breaks a link, and only the device can sign.

use dosewitness_domain::DoseEvent;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `previous_hash` of a device's first event: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What is hashed and signed for one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChainRecord {
    pub format: u32,
    pub sequence: u64,
    pub previous_hash: String,
    pub event: DoseEvent,
}

/// A chained, signed dose event as stored on the device and sent to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedDoseEvent {
    pub record: ChainRecord,
    /// Hex sha256 of the record's canonical bytes.
    pub hash: String,
    /// Hex Ed25519 signature over the 32 hash bytes.
    pub signature: String,
}

/// Why a signed event or a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event {sequence}: the hash does not match its content (edited after signing)")]
    HashMismatch { sequence: u64 },
    #[error("event {sequence}: the signature is not valid for this device's key")]
    BadSignature { sequence: u64 },
    #[error("event {sequence}: malformed {field}")]
    Malformed { sequence: u64, field: &'static str },
    #[error("event {sequence} follows {previous}: events are missing or out of order")]
    Gap { sequence: u64, previous: u64 },
    #[error("event {sequence}: previous_hash does not match the hash of event {previous}")]
    BrokenLink { sequence: u64, previous: u64 },
    #[error("the device key is malformed")]
    BadKey,
}

impl ChainRecord {
    /// Format version of [`ChainRecord`].
    pub const FORMAT: u32 = 1;

    /// The canonical bytes: compact JSON, fields in declaration order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising plain structs, strings, numbers and enums to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Hex sha256 of the canonical bytes.
    pub fn hash_hex(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }

    /// Hashes and signs this record.
    pub fn sign(self, key: &SigningKey) -> SignedDoseEvent {
        let digest = Sha256::digest(self.canonical_bytes());
        let signature = key.sign(&digest);
        SignedDoseEvent {
            hash: hex::encode(digest),
            signature: hex::encode(signature.to_bytes()),
            record: self,
        }
    }
}

/// Parses a hex Ed25519 public key.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, ChainError> {
    let bytes: [u8; 32] = hex::decode(hex_key)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(ChainError::BadKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| ChainError::BadKey)
}

impl SignedDoseEvent {
    /// The event's per-device sequence number.
    pub fn sequence(&self) -> u64 {
        self.record.sequence
    }

    /// Checks the hash against the content and the signature against `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), ChainError> {
        let sequence = self.record.sequence;
        if self.record.hash_hex() != self.hash {
            return Err(ChainError::HashMismatch { sequence });
        }
        let digest = hex::decode(&self.hash).map_err(|_| ChainError::Malformed {
            sequence,
            field: "hash",
        })?;
        let signature_bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(ChainError::Malformed {
                sequence,
                field: "signature",
            })?;
        key.verify(&digest, &Signature::from_bytes(&signature_bytes))
            .map_err(|_| ChainError::BadSignature { sequence })
    }

    /// Checks that this event directly follows `previous` (sequence + 1 and hash link), or is
    /// the first event when `previous` is `None`.
    pub fn verify_link(&self, previous: Option<(u64, &str)>) -> Result<(), ChainError> {
        let sequence = self.record.sequence;
        let (previous_sequence, previous_hash) = previous.unwrap_or((0, GENESIS_HASH));
        if sequence != previous_sequence + 1 {
            return Err(ChainError::Gap {
                sequence,
                previous: previous_sequence,
            });
        }
        if self.record.previous_hash != previous_hash {
            return Err(ChainError::BrokenLink {
                sequence,
                previous: previous_sequence,
            });
        }
        Ok(())
    }
}

/// Verifies a whole chain from its first event: every hash, signature and link.
pub fn verify_chain(events: &[SignedDoseEvent], key: &VerifyingKey) -> Result<(), ChainError> {
    let mut previous: Option<(u64, &str)> = None;
    for event in events {
        event.verify(key)?;
        event.verify_link(previous)?;
        previous = Some((event.record.sequence, &event.hash));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use dosewitness_domain::{
        CheckScores, DeviceId, DoseEventId, DoseOutcome, MedicationId, PatientId, RegimenId,
    };

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn chain(length: u64, key: &SigningKey) -> Vec<SignedDoseEvent> {
        let at = Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap();
        let mut previous_hash = GENESIS_HASH.to_string();
        (1..=length)
            .map(|sequence| {
                let signed = ChainRecord {
                    format: ChainRecord::FORMAT,
                    sequence,
                    previous_hash: previous_hash.clone(),
                    event: DoseEvent {
                        id: DoseEventId::generate(at),
                        device_id: DeviceId::generate(at),
                        patient_id: PatientId::generate(at),
                        regimen_id: RegimenId::generate(at),
                        medication_id: MedicationId::generate(at),
                        scheduled_at: at,
                        recorded_at: at,
                        outcome: DoseOutcome::Verified,
                        reasons: vec![],
                        scores: CheckScores {
                            face_detection: Some(0.9),
                            ..CheckScores::default()
                        },
                    },
                }
                .sign(key);
                previous_hash = signed.hash.clone();
                signed
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let key = key(7);
        verify_chain(&chain(5, &key), &key.verifying_key()).unwrap();
    }

    #[test]
    fn edits_deletions_reorders_and_foreign_keys_are_caught() {
        let key = key(7);
        let events = chain(4, &key);
        let verifying = key.verifying_key();

        let mut edited = events.clone();
        edited[1].record.event.outcome = DoseOutcome::Missed;
        assert_eq!(
            verify_chain(&edited, &verifying),
            Err(ChainError::HashMismatch { sequence: 2 })
        );

        let mut deleted = events.clone();
        deleted.remove(2);
        assert_eq!(
            verify_chain(&deleted, &verifying),
            Err(ChainError::Gap {
                sequence: 4,
                previous: 2
            })
        );

        let mut swapped = events.clone();
        swapped.swap(1, 2);
        assert!(matches!(
            verify_chain(&swapped, &verifying),
            Err(ChainError::Gap { .. })
        ));

        let other = super::tests::key(8);
        assert_eq!(
            verify_chain(&events, &other.verifying_key()),
            Err(ChainError::BadSignature { sequence: 1 })
        );

        // Re-signing an edited record with another key keeps the hash honest but not the signature.
        let mut forged = events.clone();
        forged[0].record.event.outcome = DoseOutcome::Missed;
        forged[0] = forged[0].record.clone().sign(&other);
        assert_eq!(
            verify_chain(&forged, &verifying),
            Err(ChainError::BadSignature { sequence: 1 })
        );
    }

    #[test]
    fn canonical_bytes_survive_a_json_round_trip() {
        let key = key(3);
        for event in chain(3, &key) {
            let wire = serde_json::to_string(&event).unwrap();
            let back: SignedDoseEvent = serde_json::from_str(&wire).unwrap();
            assert_eq!(back.record.hash_hex(), event.hash);
            back.verify(&key.verifying_key()).unwrap();
        }
    }
}
