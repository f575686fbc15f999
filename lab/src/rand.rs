//! Random bytes from the kernel (lab ids, probe nonces, SCTP tags).

pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // getrandom(2) cannot fail on a running Linux for small buffers
            // once the pool is initialised; a failure here is a broken host.
            panic!("getrandom: {err}");
        }
        filled += n as usize;
    }
    buf
}

pub fn u32() -> u32 {
    u32::from_ne_bytes(bytes::<4>())
}

pub fn u64() -> u64 {
    u64::from_ne_bytes(bytes::<8>())
}
