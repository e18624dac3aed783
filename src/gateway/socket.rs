//! The socket an upgraded WebSocket connection runs on: plain TCP, or TLS over TCP.
//!
//! The connection task ([`super::connection`]) works with readiness, not with
//! `AsyncRead`/`AsyncWrite`: it waits for `readable()`/`writable()` and then reads or
//! writes what the socket takes at once (`try_read`, `try_write_vectored`, many frames
//! per call). [`Socket`] is exactly that surface. The gateway is generic over it, so the
//! plain path is compiled for [`TcpStream`] itself, with no extra layer or branch.
//!
//! For built-in TLS (`server.tls_cert`), actix-http's rustls acceptor does the handshake
//! and reads the upgrade request; the gateway then gets its [`TlsStream`] and drives the
//! `rustls::ServerConnection` inside it by hand:
//!
//! - reading: ciphertext goes from the TCP socket into rustls (`read_tls`), is decrypted
//!   (`process_new_packets`) and comes out of `reader()`. The socket is "readable" as soon
//!   as rustls already holds plaintext (or the peer's close_notify), without waiting for
//!   the TCP socket, since bytes may have arrived together with the request.
//! - writing: frames are encrypted into rustls's buffer (`writer()`) and sent with
//!   `write_tls`. New plaintext is accepted only once earlier records are on the wire,
//!   so at most one batch of records waits in memory per connection. Records still
//!   waiting are [`Socket::pending_output`], which keeps the task waiting for
//!   writability even with an empty queue.
//!
//! Waiting uses tokio's per-direction waker slot (`poll_read_ready`/`poll_write_ready`),
//! not `readable()`/`writable()`: the HTTP task that read the upgrade request left its
//! waker in that slot, and a waker keeps its whole task allocated (2.5 KiB) until it is
//! replaced. The connection's first wait replaces it, so the HTTP task is freed at once.

use std::{
    future::{poll_fn, Future},
    io::{self, IoSlice, Read, Write},
};

use actix_tls::accept::rustls_0_23::TlsStream;
use rustls::ServerConnection;
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// Waits until `tcp` is readable, through the socket's reader waker slot.
fn read_ready(tcp: &TcpStream) -> impl Future<Output = io::Result<()>> + '_ {
    poll_fn(move |cx| tcp.poll_read_ready(cx))
}

/// Waits until `tcp` is writable, through the socket's writer waker slot.
fn write_ready(tcp: &TcpStream) -> impl Future<Output = io::Result<()>> + '_ {
    poll_fn(move |cx| tcp.poll_write_ready(cx))
}

/// What the connection task needs from its socket.
pub trait Socket: Unpin + 'static {
    /// The TCP socket underneath (for socket options).
    fn tcp(&self) -> &TcpStream;
    /// Resolves when `try_read` may have something (or the end of the stream).
    fn readable(&self) -> impl Future<Output = io::Result<()>>;
    /// Resolves when `try_write_vectored` or `flush_pending` may make progress.
    fn writable(&self) -> impl Future<Output = io::Result<()>>;
    /// Reads what is available now; `Ok(0)` is the end of the stream.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Takes as many of `bufs`' bytes as the socket accepts now.
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Whether accepted bytes still wait to reach the wire.
    fn pending_output(&self) -> bool;
    /// Sends waiting bytes, as far as the socket takes them now.
    fn flush_pending(&mut self) -> io::Result<()>;
    /// Ends our side of the stream.
    fn shutdown(&mut self) -> impl Future<Output = ()>;
}

impl Socket for TcpStream {
    #[inline]
    fn tcp(&self) -> &TcpStream {
        self
    }
    #[inline]
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        read_ready(self)
    }
    #[inline]
    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        write_ready(self)
    }
    #[inline]
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }
    /// `sendmsg` rather than tokio's `writev`: a socket send skips the file layer that
    /// `writev` goes through (4 % of the server's CPU at 10 pushes/s), and
    /// `MSG_NOSIGNAL` makes a vanished client an `EPIPE`, never a `SIGPIPE`, even in a
    /// host program that did not ignore that signal.
    #[inline]
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(&*self).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
        })
    }
    #[inline]
    fn pending_output(&self) -> bool {
        false
    }
    #[inline]
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

/// `io::Read`/`io::Write` over a non-blocking TCP socket, for rustls's `read_tls` and
/// `write_tls` (a would-block comes back as `WouldBlock`).
struct Wire<'a>(&'a TcpStream);

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes every waiting TLS record, or fails with `WouldBlock` when the socket is full.
fn send_records(tcp: &TcpStream, tls: &mut ServerConnection) -> io::Result<()> {
    while tls.wants_write() {
        if tls.write_tls(&mut Wire(tcp))? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Socket for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    async fn readable(&self) -> io::Result<()> {
        let (tcp, tls) = self.get_ref();
        // Plaintext or a close_notify already decrypted: no need to wait for the socket.
        if tls.wants_read() {
            read_ready(tcp).await
        } else {
            Ok(())
        }
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        write_ready(self.get_ref().0)
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (tcp, tls) = self.get_mut();
        loop {
            // Records read earlier but not yet decrypted (rustls stops when its plaintext
            // buffer is full) come first; alerts and key updates it produces go out.
            let state = tls.process_new_packets();
            if tls.wants_write() {
                let _ = send_records(tcp, tls);
            }
            state.map_err(tls_error)?;
            match tls.reader().read(buf) {
                Ok(n) => {
                    if n > 0 {
                        // Decrypt what is buffered now, so `readable` sees it; an error
                        // is kept by rustls and returned by the next call.
                        let _ = tls.process_new_packets();
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut Wire(tcp))? == 0 {
                return Ok(0);
            }
        }
    }

    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let (tcp, tls) = self.get_mut();
        send_records(tcp, tls)?;
        let n = tls.writer().write_vectored(bufs)?;
        match send_records(tcp, tls) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn pending_output(&self) -> bool {
        self.get_ref().1.wants_write()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        let (tcp, tls) = self.get_mut();
        send_records(tcp, tls)
    }

    async fn shutdown(&mut self) {
        let (tcp, tls) = self.get_mut();
        tls.send_close_notify();
        let _ = send_records(tcp, tls);
        let _ = AsyncWriteExt::shutdown(tcp).await;
    }
}

/// Writes all of `bytes` and anything waiting before them, waiting for writability only
/// when the socket is full.
pub async fn write_all<S: Socket>(io: &mut S, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() || io.pending_output() {
        let wrote = if bytes.is_empty() {
            io.flush_pending().map(|()| 0)
        } else {
            io.try_write_vectored(&[IoSlice::new(bytes)])
        };
        match wrote {
            Ok(0) if !bytes.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
