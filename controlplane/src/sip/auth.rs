//! Digest authentication (RFC 2617/7616, SHA-256 per RFC 8760): challenges, nonces, verification.
