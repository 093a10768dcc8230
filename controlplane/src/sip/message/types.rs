//! Typed header views: URIs, name-addrs, Via, CSeq.
