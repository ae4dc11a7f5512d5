/*
 * iptable.c - connections per client address, one table per service.
 *
 * A hash of v4-mapped IPv6 keys to counts, under one mutex because every
 * worker accepts on the same service.  An entry lives only while its
 * address has connections, so the table never holds more entries than
 * the service holds connections (bounded by max_connections).
 */
#include "config.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "iptable.h"
#include "util.h"

#define IPTABLE_BUCKETS	1024

struct ipentry {
	struct ipentry	*next;
	unsigned char	 addr[16];
	unsigned	 count;
};

struct iptable {
	pthread_mutex_t	 lock;
	struct ipentry	*bucket[IPTABLE_BUCKETS];
};

struct iptable *
iptable_new(void)
{
	struct iptable	*t = calloc(1, sizeof(*t));

	if (t)
		pthread_mutex_init(&t->lock, NULL);
	return t;
}

void
iptable_free(struct iptable *t)
{
	struct ipentry	*e, *next;
	size_t		 i;

	if (t == NULL)
		return;
	for (i = 0; i < IPTABLE_BUCKETS; i++)
		for (e = t->bucket[i]; e; e = next) {
			next = e->next;
			free(e);
		}
	pthread_mutex_destroy(&t->lock);
	free(t);
}


static unsigned
iptable_hash(const unsigned char key[16])
{
	unsigned	h = 2166136261u;
	int		i;

	for (i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % IPTABLE_BUCKETS;
}

int
iptable_take(struct iptable *t, const struct sockaddr *sa, unsigned max)
{
	unsigned char	 key[16];
	struct ipentry	*e, **head;
	int		 rc = 0;

	util_addr_key(sa, key);
	pthread_mutex_lock(&t->lock);
	head = &t->bucket[iptable_hash(key)];
	for (e = *head; e; e = e->next)
		if (memcmp(e->addr, key, 16) == 0)
			break;
	if (e == NULL) {
		if ((e = calloc(1, sizeof(*e))) == NULL)
			rc = -1;
		else {
			memcpy(e->addr, key, 16);
			e->next = *head;
			*head = e;
		}
	}
	if (e != NULL) {
		if (max != 0 && e->count >= max)
			rc = -1;
		else
			e->count++;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

void
iptable_release(struct iptable *t, const struct sockaddr *sa)
{
	unsigned char	 key[16];
	struct ipentry	*e, **pp;

	util_addr_key(sa, key);
	pthread_mutex_lock(&t->lock);
	for (pp = &t->bucket[iptable_hash(key)]; (e = *pp); pp = &e->next)
		if (memcmp(e->addr, key, 16) == 0) {
			if (--e->count == 0) {
				*pp = e->next;
				free(e);
			}
			break;
		}
	pthread_mutex_unlock(&t->lock);
}
