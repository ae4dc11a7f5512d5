/*
 * proto.c - the table of protocol filters.
 */
#include "config.h"

#include <stddef.h>

#include "proto.h"

const struct proto_ops *
proto_ops_get(enum proto_id id)
{
	switch (id) {
	case PROTO_SMTP:
		return &proto_smtp_ops;
	case PROTO_IMAP:
		return &proto_imap_ops;
	case PROTO_POP3:
		return &proto_pop3_ops;
	}
	return NULL;
}
