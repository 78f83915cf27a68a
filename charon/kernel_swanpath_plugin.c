/*
 * Copyright (C) 2025 swanpath authors
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the
 * Free Software Foundation; either version 2 of the License, or (at your
 * option) any later version.
 */

#include "kernel_swanpath_plugin.h"
#include "kernel_swanpath_ipsec.h"

#include <daemon.h>

#include <stdio.h>
#include <string.h>

/**
 * The strongSwan version whose headers this plugin was compiled against.
 * The plugin uses libcharon's and libstrongswan's structs directly, so it
 * only works with that version's libraries.
 */
#ifndef SWANPATH_STRONGSWAN_VERSION
#define SWANPATH_STRONGSWAN_VERSION VERSION
#endif

/**
 * Where dpkg records installed packages.
 */
#ifndef SWANPATH_DPKG_STATUS
#define SWANPATH_DPKG_STATUS "/var/lib/dpkg/status"
#endif

typedef struct private_kernel_swanpath_plugin_t private_kernel_swanpath_plugin_t;

/**
 * private data of kernel_swanpath plugin
 */
struct private_kernel_swanpath_plugin_t {

	/**
	 * implements plugin interface
	 */
	kernel_swanpath_plugin_t public;
};

METHOD(plugin_t, get_name, char*,
	private_kernel_swanpath_plugin_t *this)
{
	return "kernel-swanpath";
}

METHOD(plugin_t, get_features, int,
	private_kernel_swanpath_plugin_t *this, plugin_feature_t *features[])
{
	static plugin_feature_t f[] = {
		PLUGIN_CALLBACK(kernel_ipsec_register, kernel_swanpath_ipsec_create),
			PLUGIN_PROVIDE(CUSTOM, "kernel-ipsec"),
	};
	*features = f;
	return countof(f);
}

METHOD(plugin_t, destroy, void,
	private_kernel_swanpath_plugin_t *this)
{
	free(this);
}

/**
 * Find the upstream version of the installed libstrongswan package in
 * dpkg's status file ("1:5.9.8-5+deb12u6" -> "5.9.8"). libstrongswan and
 * libcharon have no run-time version accessor (VERSION is a compile-time
 * macro there too), and Debian's charon packages require the exact
 * libstrongswan they were built with, so its version is the running one.
 */
static bool installed_version(char *buf, size_t len)
{
	char line[512], *v, *end;
	bool pkg = FALSE, found = FALSE;
	FILE *f;

	f = fopen(SWANPATH_DPKG_STATUS, "r");
	if (!f)
	{
		return FALSE;
	}
	while (!found && fgets(line, sizeof(line), f))
	{
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '\0')
		{
			pkg = FALSE;
		}
		else if (strpfx(line, "Package: "))
		{
			pkg = streq(line + strlen("Package: "), "libstrongswan");
		}
		else if (pkg && strpfx(line, "Version: "))
		{
			v = line + strlen("Version: ");
			if (strchr(v, ':'))
			{
				v = strchr(v, ':') + 1;
			}
			end = strrchr(v, '-');
			if (end)
			{
				*end = '\0';
			}
			if (strlen(v) < len)
			{
				memcpy(buf, v, strlen(v) + 1);
				found = TRUE;
			}
		}
	}
	fclose(f);
	return found;
}

/*
 * see header file
 */
plugin_t *kernel_swanpath_plugin_create()
{
	private_kernel_swanpath_plugin_t *this;
	char running[64];

	if (!installed_version(running, sizeof(running)))
	{
		DBG1(DBG_KNL, "kernel-swanpath: cannot read the installed strongSwan "
			 "version from %s; assuming %s, which this plugin was built for",
			 SWANPATH_DPKG_STATUS, SWANPATH_STRONGSWAN_VERSION);
	}
	else if (!streq(running, SWANPATH_STRONGSWAN_VERSION))
	{
		DBG1(DBG_KNL, "kernel-swanpath: built for strongSwan %s, but "
			 "strongSwan %s is installed: not loading (rebuild swanpath "
			 "against this strongSwan)", SWANPATH_STRONGSWAN_VERSION, running);
		return NULL;
	}

	INIT(this,
		.public = {
			.plugin = {
				.get_name = _get_name,
				.get_features = _get_features,
				.destroy = _destroy,
			},
		},
	);

	return &this->public.plugin;
}
