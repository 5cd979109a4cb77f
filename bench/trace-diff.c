// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Workloads for bench/trace-diff.sh: fire known tracepoints a known number of
 * times on one CPU and print the wall time per unit, so the cost a tracer adds
 * can be measured as a difference, free of the clock reads BPF stats add.
 *
 *   trace-diff pingpong CPU N   two processes pinned to CPU pass a byte back
 *                               and forth through pipes N times: 2 context
 *                               switches (sched_switch) per round trip
 *   trace-diff udp CPU N        one socket on 127.0.0.1 sends itself N
 *                               datagrams and reads each back: per datagram
 *                               netif_rx, softirq_raise/entry/exit (NET_RX)
 *                               and netif_receive_skb, no context switch
 *
 * N units run in BATCHES batches; prints one line, the fastest batch's ns per
 * round trip (pingpong) or per datagram (udp): the minimum filters out the
 * other tenants' interruptions of a shared, nested VM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCHES 5

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity");
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double pingpong(long n)
{
	int there[2], back[2];
	char c = 0;
	double t0, t1, best = 0;
	pid_t child;

	if (pipe(there) || pipe(back))
		die("pipe");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(there[1]); /* EOF on there[0] once the parent is done */
		close(back[0]);
		for (;;) {
			if (read(there[0], &c, 1) != 1)
				_exit(0);
			if (write(back[1], &c, 1) != 1)
				_exit(1);
		}
	}
	/* warm up: both sides runnable and cached */
	for (int i = 0; i < 1000; i++)
		if (write(there[1], &c, 1) != 1 || read(back[0], &c, 1) != 1)
			die("pipe warm-up");
	for (int b = 0; b < BATCHES; b++) {
		t0 = now_ns();
		for (long i = 0; i < n / BATCHES; i++)
			if (write(there[1], &c, 1) != 1 || read(back[0], &c, 1) != 1)
				die("pipe");
		t1 = now_ns();
		if (!b || t1 - t0 < best)
			best = t1 - t0;
	}
	close(there[1]);
	waitpid(child, NULL, 0);
	return best / (n / BATCHES);
}

static double udp(long n)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t len = sizeof(addr);
	char buf[16] = { 0 };
	double t0, t1, best = 0;
	int s;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof(addr)) ||
	    getsockname(s, (struct sockaddr *)&addr, &len) ||
	    connect(s, (struct sockaddr *)&addr, sizeof(addr)))
		die("udp socket");
	for (int i = 0; i < 1000; i++)
		if (send(s, buf, 1, 0) != 1 || recv(s, buf, sizeof(buf), 0) != 1)
			die("udp warm-up");
	for (int b = 0; b < BATCHES; b++) {
		t0 = now_ns();
		for (long i = 0; i < n / BATCHES; i++)
			if (send(s, buf, 1, 0) != 1 || recv(s, buf, sizeof(buf), 0) != 1)
				die("udp");
		t1 = now_ns();
		if (!b || t1 - t0 < best)
			best = t1 - t0;
	}
	close(s);
	return best / (n / BATCHES);
}

int main(int argc, char **argv)
{
	long n;

	if (argc != 4) {
		fprintf(stderr, "usage: %s pingpong|udp CPU N\n", argv[0]);
		return 2;
	}
	pin(atoi(argv[2]));
	n = atol(argv[3]);
	if (n < BATCHES)
		return 2;
	if (!strcmp(argv[1], "pingpong"))
		printf("%.1f\n", pingpong(n));
	else if (!strcmp(argv[1], "udp"))
		printf("%.1f\n", udp(n));
	else
		return 2;
	return 0;
}
