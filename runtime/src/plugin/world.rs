//! The component world `wasmbatch:handler` (`guest-sdk/wit/handler.wit`): the
//! bindings wasmtime generates for it. The host side of its imports is
//! [`super::host`]'s; the calls of its exports are [`super::instance`]'s.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit/handler.wit",
    world: "handler",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use self::wasmbatch::handler::host;
