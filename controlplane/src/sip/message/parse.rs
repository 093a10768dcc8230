//! Parsing with rsip into [`super::Message`].
