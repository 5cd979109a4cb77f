//! One module per command: argument definitions and the glue to the crate
//! that does the work. Nothing here should be more than a few lines per command.

pub mod agent;
pub mod bisect;
pub mod cgroups;
pub mod check;
pub mod collapse;
pub mod demo;
pub mod doctor;
pub mod flame;
pub mod lab;
pub mod probe;
pub mod responder;
pub mod trace;
pub mod xray;
