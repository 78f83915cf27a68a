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

/*
 * see header file
 */
plugin_t *kernel_swanpath_plugin_create()
{
	private_kernel_swanpath_plugin_t *this;

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
