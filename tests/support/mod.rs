pub mod data;
pub mod reference;
