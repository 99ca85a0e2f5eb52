pub mod data;
pub mod http;
pub mod kafka;
pub mod reference;
