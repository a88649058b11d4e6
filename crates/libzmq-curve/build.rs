//! Builds libzmq 4.3.5 against libsodium when the workspace's `.cargo/config.toml`
//! overrides zmq-sys's build script (signalled by the `curve` metadata key).

use std::env;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_ZMQ_CURVE");
    println!("cargo::rustc-check-cfg=cfg(libzmq_curve_built)");
    if env::var_os("DEP_ZMQ_CURVE").is_none() {
        // No override: zmq-sys compiled and linked its own libzmq (without CURVE).
        // Building a second copy here would give duplicate symbols.
        return;
    }
    let lib = env::var("DEP_SODIUM_LIB").expect("libsodium-sys-stable sets DEP_SODIUM_LIB");
    let include =
        env::var("DEP_SODIUM_INCLUDE").expect("libsodium-sys-stable sets DEP_SODIUM_INCLUDE");
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
    println!("cargo:rustc-cfg=libzmq_curve_built");
}
