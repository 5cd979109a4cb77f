//! The agent's TOML config (`agent --config`): parsed, then resolved (the
//! checks a config passes before the agent uses it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstall_agent::config::AgentOptions;

fuzz_target!(|text: &str| {
    if let Ok(options) = AgentOptions::from_toml(text) {
        let _ = options.resolve();
    }
});
