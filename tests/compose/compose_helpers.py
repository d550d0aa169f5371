"""Shared helpers of the compose tests."""

import torch

from synthloop.compose import TensorInstances


def square_instances(n=4, size=(40, 30), cats=(1, 2)):
    rgbs, alphas, ids = [], [], []
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        rgbs.append(torch.rand(3, *size, generator=g))
        a = torch.zeros(1, *size)
        a[:, 5:-5, 5:-5] = 1
        alphas.append(a)
        ids.append(cats[i % len(cats)])
    return TensorInstances(rgbs, alphas, ids)
