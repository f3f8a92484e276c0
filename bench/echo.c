/*
 * echo.c: the floor of the stepup-agent benchmarks (docs/BENCHMARKS.md).
 *
 * A minimal line echo server over a Unix stream socket: one thread, epoll,
 * non-blocking sockets; whatever a client sends comes straight back. A
 * client that sends one line and waits for it costs the server exactly one
 * wake-up, one read and one write, which is the least any server answering
 * line-based requests over a Unix socket can do.
 *
 *   gcc -O2 -o echo bench/echo.c && ./echo /tmp/echo.sock
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void die(const char *what) {
	perror(what);
	exit(1);
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: echo SOCKET\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(argv[1]) >= sizeof addr.sun_path) {
		fprintf(stderr, "echo: socket path too long\n");
		return 2;
	}
	strcpy(addr.sun_path, argv[1]);
	unlink(argv[1]);
	int ln = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ln < 0) die("socket");
	if (bind(ln, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
	if (listen(ln, 512) < 0) die("listen");
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) die("epoll_create1");
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = ln};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, ln, &ev) < 0) die("epoll_ctl");

	static char buf[65536 + 1];
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		if (n < 0) {
			if (errno == EINTR) continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == ln) {
				for (;;) {
					int c = accept4(ln, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					if (c < 0) break;
					struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
					if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0) close(c);
				}
				continue;
			}
			ssize_t r = read(fd, buf, sizeof buf);
			if (r <= 0) {
				if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
				close(fd); /* also leaves the epoll set */
				continue;
			}
			/* Answers are small and the peer reads them: a short write
			 * is not expected; the floor does not buffer. */
			ssize_t off = 0;
			while (off < r) {
				ssize_t w = write(fd, buf + off, r - off);
				if (w < 0) {
					if (errno == EINTR) continue;
					break;
				}
				off += w;
			}
		}
	}
}
