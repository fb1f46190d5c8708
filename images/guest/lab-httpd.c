// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab's in-guest service: the smallest HTTP/1.0 server that serves
 * the lab's load. One process, one connection at a time (like the python
 * server it replaces, so a stall shows in the requests it delays), no fork
 * or thread per request, ready a few milliseconds after exec (python's
 * http.server took ~3 s to start under TCG).
 *
 *   lab-httpd PORT
 *
 * Every request is answered "200 ok\n", or, with LAB_SERVE_FILE set, with that
 * file's contents read afresh for the request (so each request runs the
 * kernel's read path for it, e.g. /proc/cmdline); a file that cannot be read
 * gives a 500 naming it. The request itself is read up to its blank line and
 * otherwise ignored; a client silent for 2 s is dropped so it cannot hold the
 * server. Built static by the image build (harness/supply/guestfs.py).
 */
#define _GNU_SOURCE   /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define BODY_MAX (1 << 20)

static char body[BODY_MAX];

static void write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;		/* the client went away: nothing to do */
		buf += n;
		len -= (size_t)n;
	}
}

/* Read the request up to its blank line (or 8 KiB, or the client's silence). */
static int read_request(int fd)
{
	char buf[8192];
	size_t have = 0;

	while (have < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		have += (size_t)n;
		buf[have] = '\0';
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			return 0;
	}
	return 0;
}

static size_t fill_body(const char *file, int *status)
{
	size_t len = 0;
	int fd;

	if (!file) {
		*status = 200;
		memcpy(body, "ok\n", 3);
		return 3;
	}
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		for (;;) {
			ssize_t n = read(fd, body + len, BODY_MAX - len);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0 || (len += (size_t)n) == BODY_MAX)
				break;
		}
		close(fd);
		*status = 200;
		return len;
	}
	*status = 500;
	return (size_t)snprintf(body, BODY_MAX, "%s: %s\n", file, strerror(errno));
}

static void serve(int fd, const char *file)
{
	char head[256];
	int status, n;
	size_t len;

	if (read_request(fd) < 0)
		return;
	len = fill_body(file, &status);
	n = snprintf(head, sizeof(head),
		     "HTTP/1.0 %d %s\r\nServer: lab\r\nContent-Type: text/plain\r\n"
		     "Content-Length: %zu\r\n\r\n",
		     status, status == 200 ? "OK" : "Internal Server Error", len);
	write_all(fd, head, (size_t)n);
	write_all(fd, body, len);
}

int main(int argc, char **argv)
{
	const char *file = getenv("LAB_SERVE_FILE");
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
	struct timeval quiet = { .tv_sec = 2 };
	int one = 1, srv;

	if (argc != 2 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		return 2;
	}
	if (file && !*file)
		file = NULL;
	signal(SIGPIPE, SIG_IGN);
	addr.sin_port = htons((unsigned short)atoi(argv[1]));
	srv = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv < 0 || setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(srv, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(srv, 1024) < 0) {	/* a stalled server's backlog must hold the whole stall */
		perror("lab-httpd");
		return 1;
	}
	for (;;) {
		int fd = accept4(srv, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("lab-httpd: accept");
			return 1;
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &quiet, sizeof(quiet));
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		serve(fd, file);
		close(fd);
	}
}
