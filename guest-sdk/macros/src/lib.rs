//! The attribute macros of `wasmbatch-guest`; use them through that crate
//! (`#[wasmbatch_guest::handler]`, `#[wasmbatch_guest::init]`,
//! `#[wasmbatch_guest::on_job_complete]`), which documents them.
//!
//! Each keeps the function as written (so a plugin's own tests call it directly) and
//! adds the ABI export that calls it through `wasmbatch_guest::__private`. The
//! function's name is all they need, so they parse nothing else and depend on nothing.

#![deny(missing_docs)]

use proc_macro::{TokenStream, TokenTree};

/// The name of the function the attribute sits on.
fn function_name(item: &TokenStream) -> Result<String, &'static str> {
    let mut tokens = item.clone().into_iter();
    while let Some(token) = tokens.next() {
        if let TokenTree::Ident(ident) = &token
            && ident.to_string() == "fn"
        {
            return match tokens.next() {
                Some(TokenTree::Ident(name)) => Ok(name.to_string()),
                _ => Err("expected a function name after `fn`"),
            };
        }
    }
    Err("this attribute goes on a function")
}

fn expand(attr: TokenStream, item: TokenStream, attribute: &str, exports: fn(&str) -> String) -> TokenStream {
    if !attr.is_empty() {
        let message = format!("#[{attribute}] takes no arguments");
        return format!("compile_error!({message:?});").parse().expect("valid tokens");
    }
    let generated = match function_name(&item) {
        Ok(name) => exports(&name),
        Err(message) => format!("compile_error!(\"#[{attribute}]: {message}\");"),
    };
    let mut out = item;
    out.extend(generated.parse::<TokenStream>().expect("generated exports are valid Rust"));
    out
}

/// Makes a function the plugin's batch handler: `fn(&Context, Vec<T>) -> Result<()>`,
/// or `fn(&Context, &mut S, Vec<T>) -> Result<()>` with the state `S` that `#[init]`
/// returned.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "handler", |name| {
        format!(
            "const _: () = {{
                ::wasmbatch_guest::__core_exports!();
                /// # Safety
                /// Both pointer pairs come from `wasmbatch_alloc` (ABI v1).
                #[cfg_attr(target_family = \"wasm\", unsafe(no_mangle))]
                #[cfg_attr(not(target_family = \"wasm\"), allow(dead_code))]
                pub unsafe extern \"C\" fn wasmbatch_handle(
                    job_ptr: *mut u8, job_len: usize, batch_ptr: *mut u8, batch_len: usize,
                ) -> i32 {{
                    // SAFETY: forwarded from the caller.
                    unsafe {{
                        ::wasmbatch_guest::__private::handle(job_ptr, job_len, batch_ptr, batch_len, |ctx, batch| {{
                            ::wasmbatch_guest::Handler::call({name}, ctx, batch)
                        }})
                    }}
                }}
            }};"
        )
    })
}

/// Makes a function the plugin's init hook, run once per instance before its first
/// batch: `fn(&Context) -> Result<S>`; the handler gets `&mut S`.
#[proc_macro_attribute]
pub fn init(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "init", |name| {
        format!(
            "const _: () = {{
                /// # Safety
                /// `ptr`/`len` come from `wasmbatch_alloc` (ABI v1).
                #[cfg_attr(target_family = \"wasm\", unsafe(no_mangle))]
                #[cfg_attr(not(target_family = \"wasm\"), allow(dead_code))]
                pub unsafe extern \"C\" fn wasmbatch_init(ptr: *mut u8, len: usize) -> i32 {{
                    // SAFETY: forwarded from the caller.
                    unsafe {{ ::wasmbatch_guest::__private::init(ptr, len, {name}) }}
                }}
            }};"
        )
    })
}

/// Makes a function the plugin's on-job-complete hook, run once per job after its
/// last batch: `fn(&Context, &JobComplete) -> Result<()>`, or
/// `fn(&Context, &mut S, &JobComplete) -> Result<()>` with the state of `#[init]`.
#[proc_macro_attribute]
pub fn on_job_complete(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, "on_job_complete", |name| {
        format!(
            "const _: () = {{
                /// # Safety
                /// Both pointer pairs come from `wasmbatch_alloc` (ABI v1).
                #[cfg_attr(target_family = \"wasm\", unsafe(no_mangle))]
                #[cfg_attr(not(target_family = \"wasm\"), allow(dead_code))]
                pub unsafe extern \"C\" fn wasmbatch_on_job_complete(
                    job_ptr: *mut u8, job_len: usize, body_ptr: *mut u8, body_len: usize,
                ) -> i32 {{
                    // SAFETY: forwarded from the caller.
                    unsafe {{ ::wasmbatch_guest::__private::on_job_complete(job_ptr, job_len, body_ptr, body_len, {name}) }}
                }}
            }};"
        )
    })
}
