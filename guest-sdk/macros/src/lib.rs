//! The attribute macros of `wasmbatch-guest`; use them through that crate
//! (`#[wasmbatch_guest::handler]`, `#[wasmbatch_guest::init]`,
//! `#[wasmbatch_guest::on_job_complete]`), which documents them.
//!
//! Each keeps the function as written (so a plugin's own tests call it directly) and
//! adds the ABI export that calls it through `wasmbatch_guest::__private`. They read
//! the function's name and, for the state check, its parameter and return types, from
//! its tokens (no parser crate): a hook taking `&mut S` must get the `S` that
//! `#[init]` returns, or the plugin does not compile.

#![deny(missing_docs)]

use proc_macro::{Delimiter, TokenStream, TokenTree};

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

/// The function's parameters' types and its return type, as source text, read from
/// its tokens: what the state check needs (`&mut S` in a hook, `Result<S>` from init).
struct Signature {
    parameters: Vec<String>,
    output: Option<String>,
}

fn signature(item: &TokenStream) -> Option<Signature> {
    let mut tokens =
        item.clone().into_iter().skip_while(|t| !matches!(t, TokenTree::Ident(i) if i.to_string() == "fn"));
    tokens.next()?; // fn
    tokens.next()?; // the name
    let parameters = loop {
        match tokens.next()? {
            TokenTree::Group(g) if g.delimiter() == Delimiter::Parenthesis => break g.stream(),
            _ => continue, // generics
        }
    };
    let mut list = Vec::new();
    let (mut current, mut depth) = (Vec::new(), 0i32);
    for token in parameters {
        match &token {
            TokenTree::Punct(p) if p.as_char() == '<' => depth += 1,
            TokenTree::Punct(p) if p.as_char() == '>' => depth -= 1,
            TokenTree::Punct(p) if p.as_char() == ',' && depth == 0 => {
                list.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(token);
    }
    if !current.is_empty() {
        list.push(current);
    }
    // Each parameter's type: what follows its first lone `:` (not a `::`).
    let parameters = list
        .iter()
        .map(|tokens| {
            let mut colon = None;
            for (i, t) in tokens.iter().enumerate() {
                if let TokenTree::Punct(p) = t
                    && p.as_char() == ':'
                {
                    let joint_before = i > 0 && matches!(&tokens[i - 1], TokenTree::Punct(q) if q.as_char() == ':');
                    let joint_after = matches!(tokens.get(i + 1), Some(TokenTree::Punct(q)) if q.as_char() == ':');
                    if !joint_before && !joint_after {
                        colon = Some(i);
                        break;
                    }
                }
            }
            let ty: TokenStream = tokens[colon.map_or(0, |c| c + 1)..].iter().cloned().collect();
            ty.to_string()
        })
        .collect();
    // The return type: the tokens after `->` up to the body (or a `where`).
    let rest: Vec<TokenTree> = tokens.collect();
    let arrow = rest.windows(2).position(|w| {
        matches!((&w[0], &w[1]), (TokenTree::Punct(a), TokenTree::Punct(b)) if a.as_char() == '-' && b.as_char() == '>')
    });
    let output = arrow.map(|i| {
        let ty: TokenStream = rest[i + 2..]
            .iter()
            .take_while(|t| {
                !matches!(t, TokenTree::Group(g) if g.delimiter() == Delimiter::Brace)
                    && !matches!(t, TokenTree::Ident(w) if w.to_string() == "where")
            })
            .cloned()
            .collect();
        ty.to_string()
    });
    Some(Signature { parameters, output })
}

/// For a hook with state (`&mut S` as its second of three parameters): a check that
/// `S` is what `#[init]` returns, made when the plugin compiles.
fn state_check(item: &TokenStream) -> String {
    let Some(signature) = signature(item) else { return String::new() };
    let [_, state, _] = signature.parameters.as_slice() else { return String::new() };
    let Some(state) = state.trim().strip_prefix('&').map(str::trim).and_then(|s| s.strip_prefix("mut ")) else {
        return String::new();
    };
    format!("const _: () = ::wasmbatch_guest::__private::same_state::<{state}, __wasmbatch_init_state>();")
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
    let check = state_check(&item);
    let mut out = expand(attr, item, "handler", |name| {
        format!(
            "const _: () = {{
                ::wasmbatch_guest::__core_exports!();
                ::wasmbatch_guest::__handle_exports!({name});
            }};
            #[cfg(all(target_arch = \"wasm32\", target_env = \"p2\"))]
            #[doc(hidden)]
            #[allow(unused_imports)]
            use ::wasmbatch_guest::__private::component::absent_hooks::*;
            ::wasmbatch_guest::__component_exports!({name}, __wasmbatch_init, __wasmbatch_on_job_complete);"
        )
    });
    out.extend(check.parse::<TokenStream>().expect("a valid check"));
    out
}

/// Makes a function the plugin's init hook, run once per instance before its first
/// batch: `fn(&Context) -> Result<S>`; the handler gets `&mut S`.
#[proc_macro_attribute]
pub fn init(attr: TokenStream, item: TokenStream) -> TokenStream {
    // The state the hooks' `&mut S` is checked against.
    let state = signature(&item).and_then(|s| s.output).map(|output| {
        format!(
            "#[doc(hidden)] #[allow(non_camel_case_types, dead_code)] \
             type __wasmbatch_init_state = <{output} as ::wasmbatch_guest::__private::InitOutput>::State;"
        )
    });
    let mut out = expand(attr, item, "init", |name| {
        format!(
            "const _: () = {{
                /// # Safety
                /// `ptr`/`len` come from `wasmbatch_alloc` (ABI v1).
                #[cfg_attr(all(target_family = \"wasm\", not(target_env = \"p2\")), unsafe(no_mangle))]
                #[cfg_attr(not(all(target_family = \"wasm\", not(target_env = \"p2\"))), allow(dead_code))]
                pub unsafe extern \"C\" fn wasmbatch_init(ptr: *mut u8, len: usize) -> i32 {{
                    // SAFETY: forwarded from the caller.
                    unsafe {{ ::wasmbatch_guest::__private::init(ptr, len, {name}) }}
                }}
            }};
            #[cfg(all(target_arch = \"wasm32\", target_env = \"p2\"))]
            #[doc(hidden)]
            fn __wasmbatch_init(
                spec: ::std::string::String,
            ) -> ::std::result::Result<(), ::wasmbatch_guest::__private::component::Failure> {{
                ::wasmbatch_guest::__private::component::result(
                    ::wasmbatch_guest::__private::init_bytes(spec.into_bytes(), {name}),
                )
            }}"
        )
    });
    out.extend(state.unwrap_or_default().parse::<TokenStream>().expect("a valid alias"));
    out
}

/// Makes a function the plugin's on-job-complete hook, run once per job after its
/// last batch: `fn(&Context, &JobComplete) -> Result<()>`, or
/// `fn(&Context, &mut S, &JobComplete) -> Result<()>` with the state of `#[init]`.
#[proc_macro_attribute]
pub fn on_job_complete(attr: TokenStream, item: TokenStream) -> TokenStream {
    let check = state_check(&item);
    let mut out = expand(attr, item, "on_job_complete", |name| {
        format!(
            "const _: () = {{
                /// # Safety
                /// Both pointer pairs come from `wasmbatch_alloc` (ABI v1).
                #[cfg_attr(all(target_family = \"wasm\", not(target_env = \"p2\")), unsafe(no_mangle))]
                #[cfg_attr(not(all(target_family = \"wasm\", not(target_env = \"p2\"))), allow(dead_code))]
                pub unsafe extern \"C\" fn wasmbatch_on_job_complete(
                    job_ptr: *mut u8, job_len: usize, body_ptr: *mut u8, body_len: usize,
                ) -> i32 {{
                    // SAFETY: forwarded from the caller.
                    unsafe {{ ::wasmbatch_guest::__private::on_job_complete(job_ptr, job_len, body_ptr, body_len, {name}) }}
                }}
            }};
            #[cfg(all(target_arch = \"wasm32\", target_env = \"p2\"))]
            #[doc(hidden)]
            fn __wasmbatch_on_job_complete(
                job_id: ::std::string::String,
                summary: ::std::string::String,
            ) -> ::std::result::Result<(), ::wasmbatch_guest::__private::component::Failure> {{
                ::wasmbatch_guest::__private::component::result(
                    ::wasmbatch_guest::__private::on_job_complete_bytes(&job_id, summary.as_bytes(), {name}),
                )
            }}"
        )
    });
    out.extend(check.parse::<TokenStream>().expect("a valid check"));
    out
}
