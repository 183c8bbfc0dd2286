// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Base.sol";

/// Paying out an order's escrow (contracts/settlement.py): content offers per hour on the total usage, each
/// compute provider per hour for its machine's share, fixed prices only on completion, the rest refunded.
library Settlement {
    /// Pay every offer for an order ending now, ``finalUsage`` seconds on its current machine after the
    /// ``usageSeconds`` of the machines it left; refund the rest of the escrow.
    function settle(State storage s, Order storage order, uint256 finalUsage, bool completed) internal {
        uint256 total = order.usageSeconds + finalUsage;
        uint256 paid = _pay(s, order, order.modelOffer, total, completed);
        for (uint256 i = 0; i < order.datasetOffers.length; i++) {
            paid += _pay(s, order, order.datasetOffers[i], total, completed);
        }
        paid += _pay(s, order, order.engineOffer, total, completed);
        Checkpoint[] storage checkpoints = s.checkpoints[order.id];
        for (uint256 i = 0; i < checkpoints.length; i++) {
            if (checkpoints[i].released) {
                paid += _pay(s, order, checkpoints[i].computeOffer, checkpoints[i].usageSeconds, false);
            }
        }
        paid += _pay(s, order, order.computeOffer, finalUsage, completed);
        if (order.escrow > paid) {
            Base.credit(s, order.owner, order.escrow - paid);
            emit Refund(Base.seq(s), order.id, order.owner, uint64(order.escrow - paid));
        }
    }

    function close(State storage s, Order storage order, OrderState state) internal {
        order.state = state;
        order.escrow = 0;
        order.endedAt = Base.time();
        for (uint256 i = 0; i < order.machines.length; i++) {
            s.busy[order.machines[i]] -= 1;
        }
    }

    /// Per-hour prices pro-rated by the second (floored), always; fixed in full, only on completion.
    function _pay(State storage s, Order storage order, bytes8 offerId, uint256 usage, bool completed)
        private
        returns (uint256 amount)
    {
        Offer storage offer = s.offers[offerId];
        Pricing storage pricing = offer.pricing;
        if (pricing.model == PricingModel.PerHour) {
            amount = uint256(pricing.amount) * usage / 3600 * order.replicas;
        } else if (pricing.model == PricingModel.Fixed && completed) {
            amount = pricing.amount;
        }
        if (amount > 0) {
            Base.credit(s, offer.owner, amount);
            emit Payment(Base.seq(s), order.id, offer.owner, uint64(amount), offer.kind, offerId);
        }
    }
}
