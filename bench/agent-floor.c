/* The floor of the agent's probing on this machine, for bench/agent.sh: the
 * same system calls as the agent's mesh thread and nothing else. Every
 * 100 ms, one sendmmsg(2) of an ICMP echo to each peer on a raw socket (with
 * SO_TIMESTAMPNS and DF, as the agent), one recvmmsg(2) of the replies
 * waiting, and a timed sleep. No bookkeeping, no metrics, no episode
 * detection: what is left is the kernel's per-packet and per-wake-up cost.
 *
 * Usage: agent-floor ADDR...   (runs until killed; needs CAP_NET_RAW)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_PEERS 64
#define ECHO_LEN 32
#define REPLY_SLOTS (MAX_PEERS + 4)

static unsigned short checksum(const void *data, int len)
{
	const unsigned short *p = data;
	unsigned int sum = 0;

	for (; len > 1; len -= 2)
		sum += *p++;
	sum = (sum >> 16) + (sum & 0xffff);
	sum += sum >> 16;
	return ~sum;
}

int main(int argc, char **argv)
{
	static unsigned char echo[MAX_PEERS][ECHO_LEN], reply[REPLY_SLOTS][256];
	static char control[REPLY_SLOTS][64];
	struct sockaddr_in to[MAX_PEERS], from[REPLY_SLOTS];
	struct iovec iov[MAX_PEERS], riov[REPLY_SLOTS];
	struct mmsghdr out[MAX_PEERS], in[REPLY_SLOTS];
	struct timespec period = { 0, 100 * 1000 * 1000 };
	int peers = argc - 1, on = 1, df = IP_PMTUDISC_DO, fd;
	unsigned short seq = 0;

	if (peers < 1 || peers > MAX_PEERS) {
		fprintf(stderr, "usage: agent-floor ADDR... (1 to %d)\n", MAX_PEERS);
		return 2;
	}
	fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_ICMP);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) ||
	    setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &df, sizeof(df))) {
		perror("agent-floor: raw ICMP socket");
		return 2;
	}
	for (int i = 0; i < peers; i++) {
		memset(&to[i], 0, sizeof(to[i]));
		to[i].sin_family = AF_INET;
		if (inet_pton(AF_INET, argv[i + 1], &to[i].sin_addr) != 1) {
			fprintf(stderr, "agent-floor: not an IPv4 address: %s\n", argv[i + 1]);
			return 2;
		}
	}
	for (;;) {
		for (int i = 0; i < peers; i++) {
			struct icmphdr *h = (struct icmphdr *)echo[i];

			memset(echo[i], 0, ECHO_LEN);
			h->type = ICMP_ECHO;
			h->un.echo.id = htons(0x4e53);
			h->un.echo.sequence = htons(seq++);
			h->checksum = checksum(echo[i], ECHO_LEN);
			iov[i] = (struct iovec){ echo[i], ECHO_LEN };
			memset(&out[i], 0, sizeof(out[i]));
			out[i].msg_hdr.msg_name = &to[i];
			out[i].msg_hdr.msg_namelen = sizeof(to[i]);
			out[i].msg_hdr.msg_iov = &iov[i];
			out[i].msg_hdr.msg_iovlen = 1;
		}
		sendmmsg(fd, out, peers, 0);
		for (int i = 0; i < REPLY_SLOTS; i++) {
			riov[i] = (struct iovec){ reply[i], sizeof(reply[i]) };
			memset(&in[i], 0, sizeof(in[i]));
			in[i].msg_hdr.msg_name = &from[i];
			in[i].msg_hdr.msg_namelen = sizeof(from[i]);
			in[i].msg_hdr.msg_iov = &riov[i];
			in[i].msg_hdr.msg_iovlen = 1;
			in[i].msg_hdr.msg_control = control[i];
			in[i].msg_hdr.msg_controllen = sizeof(control[i]);
		}
		recvmmsg(fd, in, REPLY_SLOTS, MSG_DONTWAIT, NULL);
		ppoll(NULL, 0, &period, NULL);
	}
}
