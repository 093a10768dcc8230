//! RADIUS packets (RFC 2865) with Message-Authenticator (RFC 3579).
