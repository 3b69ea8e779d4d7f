//! chest
