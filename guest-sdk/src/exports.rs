//! The macros that emit a plugin's ABI v1 exports: [`plugin!`](crate::plugin) and what
//! `#[handler]` and the other attributes expand to.

/// Registers a plugin's functions as the exports of ABI v1, in any order:
///
/// ```ignore
/// wasmbatch_guest::plugin!(handle: handle);
/// wasmbatch_guest::plugin!(init: setup, handle: handle, on_job_complete: finish);
/// ```
///
/// The same as the attributes `#[handler]`, `#[init]` and `#[on_job_complete]` on the
/// functions, which are the usual way.
#[macro_export]
macro_rules! plugin {
    ($($hook:ident : $function:path),+ $(,)?) => {
        $crate::__plugin!(@collect [] [] [] $($hook : $function,)+);
    };
}

/// The implementation of [`plugin!`]: collects the hooks in any order, then expands.
#[doc(hidden)]
#[macro_export]
macro_rules! __plugin {
    (@collect [$h:path] [$($i:path)?] [$($c:path)?] handle : $($rest:tt)*) => {
        ::core::compile_error!("plugin!: `handle` is given twice");
    };
    (@collect [$($h:path)?] [$i:path] [$($c:path)?] init : $($rest:tt)*) => {
        ::core::compile_error!("plugin!: `init` is given twice");
    };
    (@collect [$($h:path)?] [$($i:path)?] [$c:path] on_job_complete : $($rest:tt)*) => {
        ::core::compile_error!("plugin!: `on_job_complete` is given twice");
    };
    (@collect [] [$($i:path)?] [$($c:path)?] handle : $f:path, $($rest:tt)*) => {
        $crate::__plugin!(@collect [$f] [$($i)?] [$($c)?] $($rest)*);
    };
    (@collect [$($h:path)?] [] [$($c:path)?] init : $f:path, $($rest:tt)*) => {
        $crate::__plugin!(@collect [$($h)?] [$f] [$($c)?] $($rest)*);
    };
    (@collect [$($h:path)?] [$($i:path)?] [] on_job_complete : $f:path, $($rest:tt)*) => {
        $crate::__plugin!(@collect [$($h)?] [$($i)?] [$f] $($rest)*);
    };
    (@collect [$($h:path)?] [$($i:path)?] [$($c:path)?] $other:ident : $($rest:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "plugin!: unknown hook `", ::core::stringify!($other), "`; use handle, init or on_job_complete"
        ));
    };
    (@collect [] [$($i:path)?] [$($c:path)?]) => {
        ::core::compile_error!("plugin!: `handle: your_function` is required");
    };
    (@collect [$h:path] [$($i:path)?] [$($c:path)?]) => {
        $crate::__core_exports!();

        /// # Safety
        /// `ptr`/`len` come from `wasmbatch_alloc` (ABI v1).
        #[cfg_attr(all(target_family = "wasm", not(target_env = "p2")), unsafe(no_mangle))]
        #[cfg_attr(not(all(target_family = "wasm", not(target_env = "p2"))), allow(dead_code))]
        pub unsafe extern "C" fn wasmbatch_init(ptr: *mut u8, len: usize) -> i32 {
            $(
                // SAFETY: forwarded from the caller.
                return unsafe { $crate::__private::init(ptr, len, $i) };
            )?
            #[allow(unreachable_code)]
            // SAFETY: forwarded from the caller.
            unsafe { $crate::__private::init(ptr, len, |_: &$crate::Context<'_>| Ok(())) }
        }

        $crate::__handle_exports!($h);

        $crate::__component_exports!(
            $h,
            |spec: ::std::string::String| {
                $(
                    return $crate::__private::component::result(
                        $crate::__private::init_bytes(spec.into_bytes(), $i),
                    );
                )?
                #[allow(unreachable_code)]
                $crate::__private::component::result($crate::__private::init_bytes(
                    spec.into_bytes(),
                    |_: &$crate::Context<'_>| Ok(()),
                ))
            },
            |job_id: ::std::string::String, summary: ::std::string::String| {
                $(
                    return $crate::__private::component::result($crate::__private::on_job_complete_bytes(
                        &job_id,
                        summary.as_bytes(),
                        $c,
                    ));
                )?
                #[allow(unreachable_code)]
                {
                    let _ = (job_id, summary);
                    Ok(())
                }
            }
        );

        $(
            /// # Safety
            /// Both pointer pairs come from `wasmbatch_alloc` (ABI v1).
            #[cfg_attr(all(target_family = "wasm", not(target_env = "p2")), unsafe(no_mangle))]
            #[cfg_attr(not(all(target_family = "wasm", not(target_env = "p2"))), allow(dead_code))]
            pub unsafe extern "C" fn wasmbatch_on_job_complete(
                job_ptr: *mut u8,
                job_len: usize,
                body_ptr: *mut u8,
                body_len: usize,
            ) -> i32 {
                // SAFETY: forwarded from the caller.
                unsafe { $crate::__private::on_job_complete(job_ptr, job_len, body_ptr, body_len, $c) }
            }
        )?
    };
}

/// On `wasm32-wasip2`, the component's exports (the world `wasmbatch:handler`): the
/// handler `$h`, and `$init` and `$complete`, functions (or closures) from the world's
/// arguments to its result. Emitted by [`plugin!`] and `#[handler]`; nothing on other
/// targets.
#[doc(hidden)]
#[macro_export]
macro_rules! __component_exports {
    ($h:path, $init:expr, $complete:expr $(,)?) => {
        #[cfg(all(target_arch = "wasm32", target_env = "p2"))]
        const _: () = {
            struct __WasmbatchComponent;

            impl $crate::__private::component::Guest for __WasmbatchComponent {
                fn init(
                    job_spec: ::std::string::String,
                ) -> ::std::result::Result<(), $crate::__private::component::Failure> {
                    ($init)(job_spec)
                }

                fn handle_batch(
                    job_id: ::std::string::String,
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), $crate::__private::component::Failure> {
                    $crate::__private::component::result($crate::__private::handle_bytes(
                        &job_id,
                        &batch,
                        |ctx, batch| $crate::Handler::call($h, ctx, batch),
                    ))
                }

                fn on_job_complete(
                    job_id: ::std::string::String,
                    summary: ::std::string::String,
                ) -> ::std::result::Result<(), $crate::__private::component::Failure> {
                    ($complete)(job_id, summary)
                }
            }

            $crate::__private::component::__export_handler!(__WasmbatchComponent);
        };
    };
}

/// The exports that call the handler `$h`: `wasmbatch_handle` (the batch alone) and
/// `wasmbatch_handle_items` (the batch and where its items lie); emitted by
/// `#[handler]` and [`plugin!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __handle_exports {
    ($h:path) => {
        /// # Safety
        /// Both pointer pairs come from `wasmbatch_alloc` (ABI v1).
        #[cfg_attr(all(target_family = "wasm", not(target_env = "p2")), unsafe(no_mangle))]
        #[cfg_attr(not(all(target_family = "wasm", not(target_env = "p2"))), allow(dead_code))]
        pub unsafe extern "C" fn wasmbatch_handle(
            job_ptr: *mut u8,
            job_len: usize,
            batch_ptr: *mut u8,
            batch_len: usize,
        ) -> i32 {
            // SAFETY: forwarded from the caller.
            unsafe {
                $crate::__private::handle(job_ptr, job_len, batch_ptr, batch_len, |ctx, batch| {
                    $crate::Handler::call($h, ctx, batch)
                })
            }
        }

        /// # Safety
        /// The buffers come from `wasmbatch_alloc` (ABI v1, `wasmbatch_handle_items`).
        #[cfg_attr(all(target_family = "wasm", not(target_env = "p2")), unsafe(no_mangle))]
        #[cfg_attr(not(all(target_family = "wasm", not(target_env = "p2"))), allow(dead_code))]
        pub unsafe extern "C" fn wasmbatch_handle_items(
            job_ptr: *mut u8,
            job_len: usize,
            batch_ptr: *mut u8,
            batch_len: usize,
            count: usize,
        ) -> i32 {
            // SAFETY: forwarded from the caller.
            unsafe {
                $crate::__private::handle_items(job_ptr, job_len, batch_ptr, batch_len, count, |ctx, batch| {
                    $crate::Handler::call($h, ctx, batch)
                })
            }
        }
    };
}

/// The exports every plugin has, whichever hooks it defines; emitted by
/// `#[handler]` and [`plugin!`]. Every export is exported on wasm only: natively (a
/// plugin's own tests, a native build of its code) they are plain functions, so that
/// several plugins can link into one program.
#[doc(hidden)]
#[macro_export]
macro_rules! __core_exports {
    () => {
        #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
        #[cfg_attr(all(target_family = "wasm", not(target_env = "p2")), unsafe(no_mangle))]
        #[cfg_attr(not(all(target_family = "wasm", not(target_env = "p2"))), allow(dead_code))]
        pub extern "C" fn _initialize() {
            $crate::__private::initialize();
        }

        #[cfg_attr(all(target_family = "wasm", not(target_env = "p2")), unsafe(no_mangle))]
        #[cfg_attr(not(all(target_family = "wasm", not(target_env = "p2"))), allow(dead_code))]
        pub extern "C" fn wasmbatch_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[cfg_attr(all(target_family = "wasm", not(target_env = "p2")), unsafe(no_mangle))]
        #[cfg_attr(not(all(target_family = "wasm", not(target_env = "p2"))), allow(dead_code))]
        pub extern "C" fn wasmbatch_alloc(len: usize) -> *mut u8 {
            $crate::__private::alloc(len)
        }
    };
}
