/*
 * proto.c - the table of protocol filters and their SPEC 6 defaults.
 */
#include "config.h"

#include <stddef.h>

#include "mailtlsd.h"
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

unsigned
proto_default_idle_timeout(enum proto_id id)
{
	switch (id) {
	case PROTO_SMTP:
		return DEFAULT_SMTP_IDLE_TIMEOUT;
	case PROTO_IMAP:
		return DEFAULT_IMAP_IDLE_TIMEOUT;
	case PROTO_POP3:
		return DEFAULT_POP3_IDLE_TIMEOUT;
	}
	return DEFAULT_SMTP_IDLE_TIMEOUT;
}

size_t
proto_default_line_max(enum proto_id id)
{
	switch (id) {
	case PROTO_SMTP:
		return DEFAULT_SMTP_LINE_MAX;
	case PROTO_IMAP:
		return DEFAULT_IMAP_LINE_MAX;
	case PROTO_POP3:
		return DEFAULT_POP3_LINE_MAX;
	}
	return DEFAULT_SMTP_LINE_MAX;
}
