"""Load around a livepatch: a service driven from the host, stress in the guest, a probe loop.

Three things keep a guest honest while a patch goes in and out:

* **the service**: an HTTP server in the guest (``service.start``), driven from
  the host through a forwarded 127.0.0.1 port by ``httpload.HttpLoad``, an *open-loop*
  constant-rate load: request *n* is due at ``start + n / rate`` whatever
  happened to the requests before it, and its latency counts from that intended
  time (wrk2's lesson on coordinated omission). A server that stalls for a
  second therefore shows a second of latency and a second without responses,
  instead of one slow request hiding the stall.
* **stress** (``stress.start``): stress-ng in the guest, so the transition has
  busy tasks to catch.
* **the probe** (``probe.start``): a detached shell loop in the guest that runs
  a command every ``interval`` and logs guest time, exit status and output.

Everything started in the guest runs detached, in a session of its own (stopped
by signalling every process of that session), with its pid and log under ``/run/lab``
(``detached``). Clocks: ``clock``; per-window statistics: ``stats``.

Every request gets its own TCP connection (``Connection: close``); see
``HttpLoad`` for why. Measured on the lab's 2-vCPU guest (single-threaded TCG)
under the default stress, interleaved 10 s runs at 20 requests/s, p50 / p99:
python3's http.server (one thread) 20 / 40 ms; busybox httpd
with a static file 21 / 42 ms (but it serves /proc files empty: their size is
0); http.server with a thread per connection 27 / 65 ms; a busybox CGI script
(fork + exec per request) 63 ms p50 on an idle guest, and half its requests
timed out under stress. Keep-alive (pooled connections, threaded server):
12 / 40 ms, so a new connection costs ~8 ms of the median, not the tail. The
default server is now a static C program of the lab's (images/guest/lab-httpd.c):
the same one-connection-at-a-time model as the python one, ready in milliseconds
instead of ~3 s.
"""
