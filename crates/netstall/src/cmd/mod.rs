//! One module per command: argument definitions and the glue to the crate
//! that does the work. Nothing here should be more than a few lines per command.

pub mod agent;
pub mod bisect;
pub mod cgroups;
pub mod check;
pub mod collapse;
pub mod completions;
pub mod copy_binary;
pub mod demo;
pub mod doctor;
pub mod flame;
pub mod kubectl;
pub mod lab;
pub mod man;
pub mod probe;
pub mod report;
pub mod responder;
pub mod top;
pub mod trace;
pub mod xray;
