// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Assignment.sol";
import "./Settlement.sol";

/// Orders: creation with escrow and assignment, key grants, the run, and settlement or refund
/// (contracts/orders.py and contracts/assignment.py).
library Orders {
    /// Check every offer's terms, assign machines, escrow a deposit that covers the worst-case price. A
    /// deployment's machines each get a seat (a checkpoint naming the compute offer it was drawn under).
    function createOrder(State storage s, uint64 nonce, bytes32 txHash, OrderInput calldata input) external {
        bytes20 sender = Base.begin(s, nonce);
        _checkOrder(input);
        bytes8 orderId = Base.newId(txHash);
        if (s.orders[orderId].owner != bytes20(0)) revert IdTaken(orderId);
        bytes8[] memory content = _contentOffers(s, input);
        if (input.hasComputeOffer) _offerOfKind(s, input.computeOffer, OfferKind.Compute);
        bytes32 engineDigest = s.offers[input.engineOffer].contentDigest;
        for (uint256 i = 0; i < content.length; i++) {
            _checkTerms(s.offers[content[i]], engineDigest, input.leaseHours);
        }
        if (input.hasComputeOffer) _checkTerms(s.offers[input.computeOffer], engineDigest, input.leaseHours);
        bool serving = input.kind == OrderKind.Inference;
        if (serving) _checkDeployment(s, input, content);
        (bytes8[] memory picked, bytes8[] memory offers) = _assign(s, orderId, content, input, engineDigest);
        uint256 required;
        for (uint256 i = 0; i < content.length; i++) {
            required += _deposit(s.offers[content[i]].pricing, input.leaseHours, input.replicas);
        }
        for (uint256 i = 0; i < offers.length; i++) {
            required += _deposit(s.offers[offers[i]].pricing, input.leaseHours, 1);
        }
        if (input.deposit < required) revert DepositTooLow(input.deposit, required);
        Base.debit(s, sender, input.deposit, FOR_DEPOSIT);
        _store(s, orderId, sender, input, picked, offers[0]);
        for (uint256 i = 0; i < picked.length; i++) {
            s.busy[picked[i]] += 1;
            if (serving) _seat(s, orderId, picked[i], offers[i]);
        }
        emit OrderCreated(Base.seq(s), orderId, sender, input.deposit, required);
        emit OrderAssigned(Base.seq(s), orderId, picked, offers[0]);
    }

    function _store(
        State storage s,
        bytes8 orderId,
        bytes20 sender,
        OrderInput calldata input,
        bytes8[] memory picked,
        bytes8 chosen
    ) private {
        Order storage order = s.orders[orderId];
        order.id = orderId;
        order.owner = sender;
        order.kind = input.kind;
        order.state = OrderState.PendingGrants;
        order.modelOffer = input.modelOffer;
        order.engineOffer = input.engineOffer;
        order.computeOffer = chosen;
        order.leaseHours = input.leaseHours;
        order.replicas = input.replicas;
        order.deposit = input.deposit;
        order.escrow = input.deposit;
        order.createdAt = Base.time();
        order.startedAt = NONE;
        order.endedAt = NONE;
        order.datasetOffers = input.datasetOffers;
        order.adapterOffers = input.adapterOffers;
        order.machines = picked;
        order.params = input.params;
        order.gateway = input.gateway;
        order.pricePer1kTokens = input.pricePer1kTokens;
        s.orderIds.push(orderId);
    }

    /// A deployment's record of one assigned machine: its compute offer, later the seconds it served.
    function _seat(State storage s, bytes8 orderId, bytes8 machineId, bytes8 offerId) private {
        Checkpoint storage seat = Base.slot(s, orderId, machineId);
        (seat.machineId, seat.computeOffer, seat.updatedAt) = (machineId, offerId, Base.time());
    }

    /// What only a deployment needs: a replica count the network allows and revenue shares that leave
    /// something for the developer (its consensus mode is checked by the client, as its params are).
    function _checkDeployment(State storage s, OrderInput calldata input, bytes8[] memory content) private view {
        if (input.replicas > s.params.maxReplicas) revert TooManyReplicas(input.replicas, s.params.maxReplicas);
        uint256 shares;
        for (uint256 i = 0; i < content.length; i++) {
            Pricing storage pricing = s.offers[content[i]].pricing;
            if (pricing.model == PricingModel.RevenueShare) shares += pricing.shareBps;
        }
        if (shares > MAX_SHARE_BPS) revert SharesTooHigh(shares);
    }

    function postGrant(State storage s, uint64 nonce, bytes8 orderId, bytes8 offerId, bytes8 machineId, bytes calldata sealedKey)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        if (sealedKey.length == 0 || sealedKey.length > MAX_SEALED_KEY) revert BadField("sealed_key");
        Order storage order = Base.order(s, orderId);
        bytes32 key = _grantTarget(s, order, offerId, machineId, sender);
        if (s.granted[key]) revert GrantExists(offerId, machineId);
        s.granted[key] = true;
        s.grants[orderId].push(Grant(offerId, machineId, sender, Base.time(), sealedKey));
        emit GrantPosted(Base.seq(s), orderId, offerId, machineId);
        uint256 needed = Base.contentOffers(order).length * order.machines.length;
        if (order.state == OrderState.PendingGrants && s.grants[orderId].length == needed) {
            order.state = OrderState.Ready;
            emit OrderReady(Base.seq(s), orderId, order.machines);
        }
    }

    /// Record the owner's refusal; the order keeps waiting (its owner may cancel for a full refund).
    function refuseGrant(State storage s, uint64 nonce, bytes8 orderId, bytes8 offerId, bytes8 machineId, string calldata reason)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        Base.text(reason, MAX_REASON, false, "reason");
        Order storage order = Base.order(s, orderId);
        bytes32 key = _grantTarget(s, order, offerId, machineId, sender);
        if (s.granted[key]) revert AlreadyGranted(offerId, machineId);
        if (s.refused[key]) revert RefusalExists(offerId, machineId);
        s.refused[key] = true;
        s.refusals[orderId].push(KeyRefusal(offerId, machineId, sender, Base.time(), reason));
        emit GrantRefused(Base.seq(s), orderId, offerId, machineId, reason);
    }

    function startOrder(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId) external {
        bytes20 sender = Base.begin(s, nonce);
        Order storage order = Base.orderOfKind(s, orderId, OrderKind.Finetune);
        _assignee(s, order, machineId, sender);
        _requireState(order, WHEN_STARTING);
        order.state = OrderState.Running;
        order.startedAt = Base.time();
        emit OrderStarted(Base.seq(s), orderId, machineId);
    }

    /// Settle: ``usageSeconds`` is the time on this (the final) machine, capped by what is left of the lease.
    function completeOrder(
        State storage s,
        uint64 nonce,
        bytes8 orderId,
        bytes8 machineId,
        uint64 usageSeconds,
        bytes32 report,
        bytes32 manifest,
        string calldata deliveryUri
    ) external {
        bytes20 sender = Base.begin(s, nonce);
        if (usageSeconds > MAX_AMOUNT) revert BadField("usage_seconds");
        Base.text(deliveryUri, MAX_URI, false, "delivery_uri");
        Order storage order = Base.orderOfKind(s, orderId, OrderKind.Finetune);
        _assignee(s, order, machineId, sender);
        _requireState(order, WHEN_COMPLETING);
        uint256 left = uint256(order.leaseHours) * 3600 - order.usageSeconds;
        uint64 usage = usageSeconds < left ? usageSeconds : uint64(left);
        Settlement.Share[] memory current = new Settlement.Share[](1);
        current[0] = Settlement.Share(order.computeOffer, usage);
        Settlement.settle(s, order, current, true);
        Settlement.close(s, order, OrderState.Completed);
        order.reportDigest = report;
        order.manifestDigest = manifest;
        order.deliveryUri = deliveryUri;
        emit OrderCompleted(Base.seq(s), orderId, order.usageSeconds, report, manifest, deliveryUri);
    }

    /// A provider gives up on a fine-tune: only machines it left are paid for (per hour), the rest goes back.
    function failOrder(
        State storage s,
        uint64 nonce,
        bytes8 orderId,
        bytes8 machineId,
        string calldata reason,
        string calldata deliveryUri
    ) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.text(reason, MAX_TEXT, false, "reason");
        Base.text(deliveryUri, MAX_URI, true, "delivery_uri");
        Order storage order = Base.orderOfKind(s, orderId, OrderKind.Finetune);
        _assignee(s, order, machineId, sender);
        _requireState(order, WHEN_FAILING);
        Settlement.settle(s, order, new Settlement.Share[](0), false);
        Settlement.close(s, order, OrderState.Failed);
        order.failureReason = reason;
        order.deliveryUri = deliveryUri;
        emit OrderFailed(Base.seq(s), orderId, machineId, reason, deliveryUri);
    }

    /// The owner withdraws an order that is not running: only machines it left are paid for, the rest goes back.
    function cancelOrder(State storage s, uint64 nonce, bytes8 orderId) external {
        bytes20 sender = Base.begin(s, nonce);
        Order storage order = Base.order(s, orderId);
        if (order.owner != sender) revert NotOrderOwner(TO_CANCEL, orderId, order.owner);
        _requireState(order, WHEN_CANCELLING);
        Settlement.settle(s, order, new Settlement.Share[](0), false);
        Settlement.close(s, order, OrderState.Cancelled);
        emit OrderCancelled(Base.seq(s), orderId);
    }

    // --- checks --------------------------------------------------------------------------------------------

    function _checkOrder(OrderInput calldata input) private pure {
        bool serving = input.kind == OrderKind.Inference;
        Base.distinct(input.datasetOffers, "dataset_offers");
        Base.distinct(input.adapterOffers, "adapter_offers");
        if (serving ? input.datasetOffers.length != 0 : input.datasetOffers.length == 0) {
            revert BadField("dataset_offers");
        }
        if (serving ? input.adapterOffers.length > MAX_ADAPTERS : input.adapterOffers.length != 0) {
            revert BadField("adapter_offers");
        }
        for (uint256 i = 0; i < input.adapterOffers.length; i++) {
            if (input.adapterOffers[i] == input.modelOffer) revert BadField("adapter_offers");
        }
        if (input.params.length > MAX_PARAMS) revert BadField("params");
        if (input.leaseHours < 1 || input.leaseHours > MAX_LEASE_HOURS) revert BadField("lease_hours");
        if (input.replicas < 1 || input.replicas > (serving ? MAX_REPLICAS : 1)) revert BadField("replicas");
        if (input.deposit > MAX_AMOUNT) revert BadField("deposit");
        if (input.pricePer1kTokens > MAX_AMOUNT || (!serving && input.pricePer1kTokens != 0)) revert BadField("params");
        if (!serving && input.gateway != bytes20(0)) revert BadField("params");
    }

    /// The content offers in the order the contract reads them: model, datasets…, adapters…, engine.
    function _contentOffers(State storage s, OrderInput calldata input) private view returns (bytes8[] memory content) {
        uint256 datasets = input.datasetOffers.length;
        content = new bytes8[](datasets + input.adapterOffers.length + 2);
        content[0] = _offerOfKind(s, input.modelOffer, OfferKind.Model).id;
        for (uint256 i = 0; i < datasets; i++) {
            content[i + 1] = _offerOfKind(s, input.datasetOffers[i], OfferKind.Dataset).id;
        }
        for (uint256 i = 0; i < input.adapterOffers.length; i++) {
            content[datasets + i + 1] = _offerOfKind(s, input.adapterOffers[i], OfferKind.Model).id;
        }
        content[content.length - 1] = _offerOfKind(s, input.engineOffer, OfferKind.Engine).id;
    }

    function _offerOfKind(State storage s, bytes8 offerId, OfferKind kind) private view returns (Offer storage offer) {
        offer = Base.offer(s, offerId);
        if (offer.kind != kind) revert WrongOfferKind(offerId, offer.kind, kind);
        if (!offer.active) revert OfferRetired(kind, offerId);
    }

    function _checkTerms(Offer storage offer, bytes32 engineDigest, uint64 leaseHours) private view {
        Restrictions storage limits = offer.restrictions;
        if (limits.engineDigests.length > 0 && !Assignment.containsDigest(limits.engineDigests, engineDigest)) {
            revert EngineNotAllowed(offer.kind, offer.id, engineDigest);
        }
        if (limits.maxLeaseHours != 0 && leaseHours > limits.maxLeaseHours) {
            revert LeaseTooLong(offer.kind, offer.id, limits.maxLeaseHours, leaseHours);
        }
    }

    /// Only the owner of one of the order's content offers decides on its key, for an assigned machine, while
    /// the order waits for grants; returns the (order, offer, machine) key of that decision.
    function _grantTarget(State storage s, Order storage order, bytes8 offerId, bytes8 machineId, bytes20 sender)
        private
        view
        returns (bytes32)
    {
        Offer storage offer = Base.offer(s, offerId);
        bool inOrder = offerId == order.modelOffer || offerId == order.engineOffer
            || Base.contains(order.datasetOffers, offerId) || Base.contains(order.adapterOffers, offerId);
        if (!inOrder) revert OfferNotInOrder(offerId, order.id);
        if (offer.owner != sender) revert NotOfferOwner(TO_GRANT, offerId, offer.owner);
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_GRANT, machineId, order.id);
        _requireState(order, order.kind == OrderKind.Inference ? WHEN_GRANTING_DEPLOYMENT : WHEN_GRANTING);
        return keccak256(abi.encode(order.id, offerId, machineId));
    }

    function _requireState(Order storage order, uint8 action) private view {
        OrderState state = order.state;
        bool allowed = action == WHEN_GRANTING
            ? state == OrderState.PendingGrants
            : action == WHEN_GRANTING_DEPLOYMENT
                ? state <= OrderState.Running
                : action == WHEN_STARTING
                    ? state == OrderState.Ready
                    : action == WHEN_COMPLETING
                        ? state == OrderState.Running
                        : action == WHEN_FAILING ? state <= OrderState.Running : state <= OrderState.Ready;
        if (!allowed) revert WrongOrderState(order.id, state, action);
    }

    /// The assigned machine the sender provides: only it may report on the order.
    function _assignee(State storage s, Order storage order, bytes8 machineId, bytes20 sender) private view {
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_REPORT, machineId, order.id);
        Base.providedMachine(s, machineId, sender);
    }

    /// The most an order can owe an offer: what it must escrow up front.
    function _deposit(Pricing storage pricing, uint256 leaseHours, uint256 replicas) private view returns (uint256) {
        if (pricing.model == PricingModel.PerHour) return uint256(pricing.amount) * leaseHours * replicas;
        return pricing.model == PricingModel.Fixed ? pricing.amount : 0;
    }

    // --- assignment ----------------------------------------------------------------------------------------

    /// The machines (and their compute offers) an order gets, or NoEligibleMachine with every refusal.
    function _assign(State storage s, bytes8 orderId, bytes8[] memory content, OrderInput calldata input, bytes32 engineDigest)
        private
        view
        returns (bytes8[] memory picked, bytes8[] memory offers)
    {
        bytes8[] memory computes;
        if (input.hasComputeOffer) {
            computes = new bytes8[](1);
            computes[0] = input.computeOffer;
        } else {
            computes = Assignment.accepting(s, engineDigest, input.leaseHours, bytes8(0));
        }
        bool serving = input.kind == OrderKind.Inference;
        (Candidates memory found, Refused[] memory refusals) =
            Assignment.candidates(s, orderId, content, computes, serving);
        (picked, offers) = Assignment.draw(blockhash(block.number - 1), orderId, found, input.replicas, !serving);
        if (picked.length < input.replicas) revert NoEligibleMachine(picked.length, input.replicas, refusals);
    }
}
