//! Signals: a file-size limit is an error of the write that passes it, and
//! SIGINT (Ctrl-C), SIGTERM and SIGHUP end the program as usual, but only
//! after the temporary files of the saves in progress are removed, so that
//! every output keeps its previous contents (or the new ones, whole).

/// Makes a file-size limit (`ulimit -f`) an error of the write that
/// passes it, which then removes its temporary file, rather than a signal
/// that kills the program mid-save.
pub fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: setting a signal to be ignored, before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The signals that end the program once the temporary files are removed.
#[cfg(unix)]
const ENDING: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Hands SIGINT, SIGTERM and SIGHUP to a thread of their own, which
/// removes the temporary files of the saves in progress
/// ([`convnet::io::abandon_writes`]) and then ends the program with the
/// same signal and its default action, so that the exit status still
/// tells it (130 for Ctrl-C in a shell). A signal that the program was
/// started with ignored (`nohup`, a background job) stays ignored.
///
/// The signals are blocked in every thread and received with `sigwait`,
/// so no code runs inside a signal handler. Call this first thing in
/// `main`, before any other thread starts (threads inherit the blocked
/// set; programs that convnet starts get an empty one from `std`).
pub fn remove_temporaries_on_signals() {
    #[cfg(unix)]
    // SAFETY: the sigset and sigaction structures are initialised by the
    // calls before use, and only this thread runs yet.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in ENDING {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_DFL
            {
                libc::sigaddset(&mut set, signal);
            }
        }
        let mut previous: libc::sigset_t = std::mem::zeroed();
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous) != 0 {
            return;
        }
        let waiter = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || wait_and_end(set));
        if waiter.is_err() {
            // Without the thread, leave the signals to their default action.
            libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        }
    }
}

/// Waits for one of `set`, removes the temporary files and ends the
/// program with that signal.
#[cfg(unix)]
fn wait_and_end(set: libc::sigset_t) {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set; `signal` a valid place.
    while unsafe { libc::sigwait(&set, &mut signal) } != 0 {}
    convnet::io::abandon_writes();
    // SAFETY: restoring the default action and raising the signal in this
    // thread, where it is then unblocked: the process ends as it would have
    // without convnet's handling.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut one: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut one);
        libc::sigaddset(&mut one, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
        libc::raise(signal);
    }
    // Not reached: the default action of these signals ends the process.
    std::process::exit(128 + signal);
}
