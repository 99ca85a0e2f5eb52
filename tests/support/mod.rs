pub mod data;
pub mod kafka;
pub mod reference;
