//! BER encoding of the VerifyCallState `data` field.
