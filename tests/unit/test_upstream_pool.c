/* SPDX-License-Identifier: BSD-2-Clause */
/* tests/unit/test_upstream_pool.c: which configurations may share a kept
 * upstream connection (sg_upstream_same): every [upstream] setting that
 * shapes the connection or the identity on it (servers in order, identity
 * mode, EHLO name, TLS, CA, name to verify, service account) must match;
 * the rest (timeouts, limits, the pool's own size) may change. */
#include <stdlib.h>
#include <string.h>

#include "../../common/config.h"
#include "../../upstream/link.h"
#include "check.h"

static sg_upstream_server srv_a[2] = {{.host = "10.0.0.5", .port = "25"},
                                      {.host = "mx2.example", .port = "25"}};
static sg_upstream_server srv_b[2] = {{.host = "10.0.0.5", .port = "25"},
                                      {.host = "mx2.example", .port = "25"}};

static sg_config base(sg_upstream_server *srv)
{
	return (sg_config){.servers = srv, .nservers = 2,
	                   .identity = SG_ID_XFORWARD,
	                   .upstream_helo = "gate.example",
	                   .auth_user = "", .auth_password_file = "",
	                   .upstream_tls = SG_UTLS_NONE, .upstream_ca_file = "",
	                   .upstream_tls_name = "", .pool_size = 8,
	                   .upstream_timeout_ms = 300000};
}

static void test_same(void)
{
	sg_config a = base(srv_a), b = base(srv_b);
	ASSERT(sg_upstream_same(&a, &a));
	ASSERT(sg_upstream_same(&a, &b), "equal values, other strings");
	b.upstream_timeout_ms = 1000;
	b.pool_size = 2;
	b.max_message_size = 1024;
	b.hostname = "other.example";
	ASSERT(sg_upstream_same(&a, &b), "only what the connection does not carry");
}

static void test_differs(void)
{
	sg_config a = base(srv_a);
	sg_upstream_server other[2] = {{.host = "10.0.0.5", .port = "2525"},
	                               {.host = "mx2.example", .port = "25"}};
	sg_upstream_server swapped[2] = {srv_a[1], srv_a[0]};
	sg_config b;
	b = base(other);
	ASSERT(!sg_upstream_same(&a, &b), "a server's port");
	b = base(swapped);
	ASSERT(!sg_upstream_same(&a, &b), "the servers' order");
	b = base(srv_b);
	b.nservers = 1;
	ASSERT(!sg_upstream_same(&a, &b), "one server fewer");
	b = base(srv_b);
	b.identity = SG_ID_HEADER;
	ASSERT(!sg_upstream_same(&a, &b), "identity");
	b = base(srv_b);
	b.upstream_helo = "other.example";
	ASSERT(!sg_upstream_same(&a, &b), "helo");
	b = base(srv_b);
	b.upstream_tls = SG_UTLS_REQUIRED;
	ASSERT(!sg_upstream_same(&a, &b), "tls");
	b = base(srv_b);
	b.upstream_ca_file = "/etc/ssl/other.pem";
	ASSERT(!sg_upstream_same(&a, &b), "ca_file");
	b = base(srv_b);
	b.upstream_tls_name = "mx.example";
	ASSERT(!sg_upstream_same(&a, &b), "tls_name");
	b = base(srv_b);
	b.auth_user = "relay@example.org";
	ASSERT(!sg_upstream_same(&a, &b), "auth_user");
	b = base(srv_b);
	b.auth_password_file = "/etc/saslgate/upstream.secret";
	ASSERT(!sg_upstream_same(&a, &b), "auth_password_file");
}

int main(void)
{
	test_same();
	test_differs();
	return CHECK_SUMMARY();
}
